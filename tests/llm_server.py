"""A real OpenAI-compatible chat server for tests: ``/v1/chat/completions`` served by SmolLM2.

It runs the shipped SmolLM2-135M-Instruct with transformers ``generate`` (greedy, capped
``max_new_tokens``) in a ``http.server`` thread on 127.0.0.1, so the labeller's HTTP client,
retries and caching are exercised end to end without network. ``fail_first`` answers the first N
requests with HTTP 429 (with ``Retry-After: 0``) to test backoff.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


class ChatServer:
    """Start with ``with ChatServer() as srv:``; ``srv.base_url`` ends in ``/v1``."""

    def __init__(self, max_new_tokens: int = 24, fail_first: int = 0, fail_code: int = 429) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from saeembed.reader import resolve_reader

        _, path = resolve_reader(None)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens
        self.fail_first = fail_first
        self.fail_code = fail_code
        self.requests = 0
        self.failed = 0
        self.generated = 0
        self._lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    def generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int, int]:
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        with self._gen_lock, torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=min(max_tokens, self.max_new_tokens), do_sample=False,
                                      temperature=None, top_p=None, top_k=None,
                                      pad_token_id=self.tokenizer.eos_token_id)
        n_in = enc["input_ids"].shape[1]
        new = out[0, n_in:]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(n_in), int(new.shape[0])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests += 1
                    fail = server.failed < server.fail_first
                    if fail:
                        server.failed += 1
                if fail:
                    self._send(server.fail_code, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                    return
                text, n_in, n_out = server.generate(body["messages"], int(body.get("max_tokens") or 16))
                with server._lock:
                    server.generated += n_out
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model", "smollm2"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "length"}],
                    "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
                })

        return Handler

    def start(self) -> ChatServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
