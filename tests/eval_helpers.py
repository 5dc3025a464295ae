"""Test doubles for the eval/generate/RL tests: a permissive verifier, a graded reward and an OpenAI-compatible
stub server."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from demo.tasks import solve


def accept_nonempty(task: str | None, prompt: str, answer: str | None, output: str) -> bool:
    """A verifier that keeps any non-empty answer: lets an untrained teacher's output through."""
    return bool(output.strip())


def brevity(task: str | None, prompt: str, answer: str | None, output: str) -> float:
    """A graded reward: shorter answers score higher. Completions of one prompt differ, so GRPO's group
    advantages are not all zero even when no answer is correct yet."""
    return 1.0 / (1.0 + len(output.split()))


Reply = Callable[[dict[str, Any]], str]


def demo_teacher(body: dict[str, Any]) -> str:
    """A scripted teacher: new tasks when asked for tasks, else an answer (wrong for `add`, empty for `upper`)."""
    content = body["messages"][-1]["content"]
    if "Write one task per line" in content:
        examples = re.findall(r"^Task: (.+)$", content, re.M)
        if body["seed"] % 2 == 0:  # by request (the client numbers them), not by arrival: requests run in parallel
            return ("Here are new tasks:\nTask: reverse: wxyz\nTask: reverse: wxyz\n2. Task: add: 3+4\nnot a task\n"
                    "Task: copy: qwer")
        return f"Task: reverse: wxya\nTask: upper: abcd\nTask: {examples[0]}"
    if "Reply with one word" in content:  # a judge
        return "yes" if "dcba" in content else "no"
    if content.startswith("add:"):
        return "0"
    if content.startswith("upper:"):
        return ""
    return solve(content) or "?"


class StubServer:
    """POST /v1/chat/completions on 127.0.0.1 (a real socket). Records requests; answers 503 `fail_first`
    times, and 401 without `Authorization: Bearer <key>` when a key is set."""

    def __init__(self, reply: Reply = demo_teacher, key: str | None = None, fail_first: int = 0):
        self.reply, self.key, self.fail_left = reply, key, fail_first
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    failing = server.fail_left > 0
                    server.fail_left -= failing
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if failing:
                    return self._send(503, {"error": {"message": "busy"}})
                with server.lock:
                    text = server.reply(body)
                choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                           for i in range(body.get("n") or 1)]
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
