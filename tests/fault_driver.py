"""Test helper, not a test: run a generation driver that dies like a killed process.

``python tests/fault_driver.py K MODULE [driver flags...]`` runs ``python -m MODULE`` whose answer
writer writes K answers, then half of the next line, and SIGKILLs its own process — a crash in
mid-write, injected here so the production writer carries no fault hook.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from llava.eval.runs import answers_io


def main() -> None:
    kill_after, module, *argv = sys.argv[1:]
    kill_after = int(kill_after)
    write = answers_io.AnswerWriter.write

    def dying_write(self, rec: dict) -> None:
        if self.written >= kill_after:
            line = answers_io.dumps(rec)
            self.fh.write(line[: len(line) // 2])
            self.fh.flush()
            os.fsync(self.fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, rec)

    answers_io.AnswerWriter.write = dying_write
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
