"""The vLLM side of benchmarks/vllm_parity.py; runs in the vLLM venv (scripts/vllm_venv.sh), not in seqcls's.

    .venv-vllm/bin/python benchmarks/vllm_child.py JOB.json RESULT.json

Imports only vllm, json, numpy and the standard library: it reads nothing of seqcls, so it sees a run
directory exactly as any vLLM user would. JOB.json: {"mode": "offline" | "server", "model": DIR,
"max_model_len": N, "truncate_prompt_tokens": N, "truncation_side": "right" | "left", "texts": [...],
"port": P}. RESULT.json: {"probs": [[...], ...], "labels": [...], "load_s": ..., "classify_s": ...}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np


def offline(job: dict) -> dict:
    from vllm import LLM

    t0 = time.perf_counter()
    llm = LLM(model=job["model"], runner="pooling", max_model_len=job["max_model_len"], dtype="float32",
              seed=0, enforce_eager=True)
    t1 = time.perf_counter()
    outputs = llm.classify(job["texts"], use_tqdm=False, tokenization_kwargs=truncation(job))
    t2 = time.perf_counter()
    probs = np.asarray([o.outputs.probs for o in outputs], dtype=np.float64)
    return {"probs": probs.tolist(), "labels": None, "load_s": t1 - t0, "classify_s": t2 - t1}


def truncation(job: dict) -> dict:
    """Truncation as in training: keep max_seq_length tokens on the saved side, pooling marker last.

    vLLM 0.32 loads the pooling runner's tokenizer with truncation_side "right" whatever the saved one says. Without
    a `truncation_side` in the request it truncates inside the tokenizer (the post-processor then appends the marker
    after the cut); with one, it encodes the whole text and slices the tokens, which on the right would cut the
    marker off. So: right-truncated runs send no side, left-truncated ones send "left" (the kept tail ends in the
    marker)."""
    kwargs = {"truncate_prompt_tokens": job["truncate_prompt_tokens"]}
    if job["truncation_side"] == "left":
        kwargs["truncation_side"] = "left"
    return kwargs


def _get(url: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def server(job: dict) -> dict:
    port = str(job["port"])
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", job["model"], "--runner", "pooling",
           "--max-model-len", str(job["max_model_len"]), "--dtype", "float32", "--seed", "0", "--enforce-eager",
           "--host", "127.0.0.1", "--port", port]
    log = open(job["log"], "w") if job.get("log") else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + job.get("startup_timeout_s", 600)
        while True:  # bounded wait for the server to come up
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}; see {job.get('log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health within {job.get('startup_timeout_s', 600)} s")
            try:
                if _get(base + "/health", timeout=5) == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        t1 = time.perf_counter()
        body = json.dumps({"model": job["model"], "input": job["texts"], **truncation(job)}).encode()
        request = urllib.request.Request(base + "/classify", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as r:  # one bounded request with every text
            answer = json.loads(r.read())
        t2 = time.perf_counter()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    data = sorted(answer["data"], key=lambda d: d["index"])
    return {"probs": [d["probs"] for d in data], "labels": [d["label"] for d in data], "load_s": t1 - t0,
            "classify_s": t2 - t1}


def main() -> None:
    job = json.loads(open(sys.argv[1], encoding="utf-8").read())
    result = offline(job) if job["mode"] == "offline" else server(job)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":  # vLLM's engine starts worker processes that re-import this file
    main()
