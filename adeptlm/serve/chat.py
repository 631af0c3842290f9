"""`adept chat`: talk to a model in the terminal.

Interactive under a terminal (a prompt, streamed answers, the conversation kept across turns) and
line by line when stdin is piped (one answer per input line, still multi-turn, with newlines inside
an answer written as \n and backslashes doubled, so the output stays one line per answer). /reset forgets the
conversation, /exit (or end of input) leaves.
"""

from __future__ import annotations

import sys

from ..backends import GenParams

HELP = "commands: /reset forgets the conversation, /exit leaves"


def chat_loop(engine, params: GenParams, system: str | None = None, stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    if interactive:
        stdout.write(f"adept chat with {engine.model_id} ({engine.name}); {HELP}\n")
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line:                   # end of input
            if interactive:
                stdout.write("\n")
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        command = text.strip().lower()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            history = history[:1] if system else []
            stdout.write("(conversation reset)\n")
            stdout.flush()
            continue
        if command.startswith("/"):
            stdout.write(f"unknown command {text.strip()}; {HELP}\n")
            continue
        history.append({"role": "user", "content": text})
        if interactive:
            stdout.write("model> ")
        answer = ""
        for delta in engine.chat(history, params):
            answer += delta.text
            if interactive:
                stdout.write(delta.text)
                stdout.flush()
        if not interactive:   # one line per answer: newlines inside it are written as \n
            stdout.write(answer.replace("\\", "\\\\").replace("\n", "\\n"))
        stdout.write("\n")
        stdout.flush()
        history.append({"role": "assistant", "content": answer})
