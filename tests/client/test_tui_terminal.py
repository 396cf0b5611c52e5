"""`tidings chat` as a person meets it: the real command in a pseudo-terminal, keys typed as
bytes, and the outcome checked at the other end (the peer's SDK receives the messages).

The pilot tests (test_tui.py) call the app's handlers directly; these go through everything
in between: the console script's start-up, the terminal driver, the initial focus, the key
parser. The bug they pin down: focus started on the conversation list, so the first things a
newcomer typed ("/to bob", a message), or anything typed after Tab, vanished unsent.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tidings
from tidings.client.sdk import Client
from tidings.client.store import KdfParams

PASS = "terminal passphrase"
ROWS, COLS = 40, 120
WAIT = 60.0  # upper bound of every wait (a guard against hangs, not a timing assertion)
SCREEN_WAIT = 20.0  # how long to look for something on screen before typing on anyway
KEY_INTERVAL = 0.02  # between keystrokes (a fast typist)
ENTER, TAB, CTRL_Q = b"\r", b"\t", b"\x11"
_ESCAPES = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class Terminal:
    """A child process on the slave side of a pseudo-terminal; this side reads its screen
    output (kept, escape sequences stripped) and types bytes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                        env=env, start_new_session=True)
        os.close(slave)
        self._master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def text(self) -> str:
        """Everything printed so far, without escape sequences."""
        with self._lock:
            raw = bytes(self._raw)
        return _ESCAPES.sub(b"", raw).decode("utf-8", "replace")

    def wait_for_text(self, needle: str) -> bool:
        """Wait until ``needle`` is on screen, as a person looks before typing on. False when
        it never shows (the caller goes on: the outcome is asserted at the other end)."""
        deadline = time.monotonic() + SCREEN_WAIT
        while needle not in self.text:
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def type(self, data: bytes) -> None:
        """Type ``data`` one key at a time, as a person (or tmux send-keys) does: a terminal
        delivers each keystroke as its own read."""
        for key in data:
            os.write(self._master, bytes((key,)))
            time.sleep(KEY_INTERVAL)

    def close(self) -> int:
        """Quit with ctrl+q (kill if it does not); the exit status."""
        if self.process.poll() is None:
            try:
                self.type(CTRL_Q)
                self.process.wait(timeout=WAIT)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        self._reader.join(timeout=WAIT)
        return self.process.returncode


def chat_command(profile: Path) -> tuple[list[str], dict[str, str]]:
    """The real `tidings chat` of this checkout, in a terminal that says it is an xterm."""
    src = str(Path(tidings.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TIDINGS_PASSPHRASE": PASS,
           "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS)}
    for noisy in ("TEXTUAL", "NO_COLOR", "TEXTUAL_DRIVER"):
        env.pop(noisy, None)
    argv = [sys.executable, "-c", "from tidings.cli import main; main()",
            "--profile", str(profile), "chat"]
    return argv, env


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


async def received_bodies(client: Client, expected: int) -> list[str]:
    """Bodies of the messages ``client`` receives, once there are ``expected`` of them (or
    the wait runs out: then whatever arrived, for the assertion to show)."""
    got: list[str] = []
    deadline = time.monotonic() + WAIT
    while len(got) < expected and time.monotonic() < deadline:
        got += [e.message.body for e in await client.poll()
                if e.kind == "message" and e.message is not None]
        await asyncio.sleep(0.2)
    return got


def test_chat_in_a_terminal_sends_what_a_newcomer_types(
    tmp_path: Path, server_url: str, names: Callable[[str], str], terminals: list[Terminal]
) -> None:
    """First launch (no conversations): "/to bob" and a message, then Tab and another
    message. Second launch: the conversation with Bob is open, a message goes straight to
    him. Bob's SDK receives all three, in order."""

    async def register(profile: str, name: str) -> Client:
        return await Client.register(tmp_path / profile, PASS, name, server_url,
                                     kdf=KdfParams.fast_for_tests(), prekey_count=30)

    async def accounts() -> tuple[str, str]:
        alice = await register("alice", names("alice"))
        bob = await register("bob", names("bob"))
        out = alice.account.username, bob.account.username
        for c in (alice, bob):
            await c.aclose()
        return out

    _, b = asyncio.run(accounts())
    argv, env = chat_command(tmp_path / "alice")

    async def scenario() -> None:
        bob = Client.open(tmp_path / "bob", PASS)
        try:
            terminal = Terminal(argv, env)
            terminals.append(terminal)
            terminal.wait_for_text("Conversations")  # the footer: the app is on screen
            terminal.type(f"/to {b}".encode() + ENTER)
            terminal.wait_for_text("(no messages)")  # the new conversation is open
            terminal.type(b"hello from a terminal" + ENTER)
            terminal.wait_for_text("me: hello from a terminal")
            terminal.type(TAB + b"typed after tab" + ENTER)
            got = await received_bodies(bob, 2)
            assert got == ["hello from a terminal", "typed after tab"], terminal.text[-3000:]
            assert terminal.close() == 0

            terminal = Terminal(argv, env)
            terminals.append(terminal)
            terminal.wait_for_text("me: typed after tab")  # Bob's conversation, open at start
            terminal.type(b"second launch" + ENTER)
            got = await received_bodies(bob, 1)
            assert got == ["second launch"], terminal.text[-3000:]
            assert terminal.close() == 0
        finally:
            await bob.aclose()

    asyncio.run(scenario())
