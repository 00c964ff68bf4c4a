"""Drives a3kv with the official `openai` client; prints one JSON object for the Rust test."""
import json
import sys

import openai

base = sys.argv[1]
c = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=120, max_retries=0)
model = c.models.list().data[0].id
docs = [
    {"text": "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889."},
    {"text": "Mount Fuji is the highest mountain in Japan, at 3,776 metres."},
]
extra = {"documents": docs, "fusion": {"method": "a3", "recompute_ratio": 0.15}}
msgs = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "When was the Eiffel Tower completed?"},
]
out = {"model": model}

r = c.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0, extra_body=extra)
out["text"] = r.choices[0].message.content
out["finish_reason"] = r.choices[0].finish_reason
out["usage"] = r.usage.model_dump()

parts, usage, finish = [], None, None
stream = c.chat.completions.create(
    model=model, messages=msgs, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True}, extra_body=extra,
)
for ch in stream:
    if ch.choices:
        parts.append(ch.choices[0].delta.content or "")
        finish = ch.choices[0].finish_reason or finish
    if ch.usage is not None:
        usage = ch.usage.model_dump()
out["stream_text"] = "".join(parts)
out["stream_finish_reason"] = finish
out["stream_usage"] = usage

plain = c.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
out["completion_text"] = plain.choices[0].text
sparts = [ch.choices[0].text for ch in c.completions.create(
    model=model, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True) if ch.choices]
out["completion_stream_text"] = "".join(sparts)

lp = c.chat.completions.create(
    model=model, messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
out["logprobs_entries"] = len(content)
out["logprobs_completion_tokens"] = lp.usage.completion_tokens
out["logprobs_top_counts"] = [len(e.top_logprobs) for e in content]
out["logprobs_greedy_is_top1"] = all(e.token == e.top_logprobs[0].token for e in content)
out["logprobs_bytes_spell_text"] = bytes(b for e in content for b in e.bytes).decode(
    "utf-8", "replace") == lp.choices[0].message.content
plp = c.completions.create(
    model=model, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2)
out["completion_logprobs_tokens"] = len(plp.choices[0].logprobs.tokens)
out["completion_logprobs_completion_tokens"] = plp.usage.completion_tokens
out["completion_logprobs_top_sizes"] = [len(d) for d in plp.choices[0].logprobs.top_logprobs]

try:
    c.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=2)
    out["unknown_model_status"] = 200
except openai.APIStatusError as e:
    out["unknown_model_status"] = e.status_code
try:
    c.chat.completions.create(model=model, messages=msgs, max_tokens=2, extra_body={"fusion": {"method": "nope"}})
    out["bad_fusion_status"] = 200
except openai.APIStatusError as e:
    out["bad_fusion_status"] = e.status_code
print(json.dumps(out))
