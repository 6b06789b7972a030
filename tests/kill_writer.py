"""A process that writes the journal hard until it is killed (tests/test_journal_kill.py).

Usage: python -m tests.kill_writer TMP_DIR.  Prints ``ready`` once the
journal is open, then ``durable SEQ`` each time records become durable.
"""

import faulthandler
import signal
import sys
import threading
import time
from pathlib import Path

from controller.core import events as ev
from drivers.keys import load_key
from tests.journaling import event_record, open_journal


_OUT = threading.Lock()   # the journal's thread reports while the main thread says ready


def say(line: str) -> None:
    """One whole line: ``print`` writes the text and its newline apart, so a report from
    the journal's thread could land between them ("readydurable 7") and the test would
    never see ``ready``."""
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def report(seq: int) -> None:
    say("durable {}".format(seq))


def main() -> None:
    faulthandler.register(signal.SIGUSR1)   # the test asks for our stacks if we never get ready
    tmp = Path(sys.argv[1])
    prov = None if (tmp / "epoch.key").exists() else load_key(tmp / "record.key")
    journal = open_journal(tmp, prov, segment_bytes=64 * 1024, checkpoint_every=300, on_durable=report)
    say("ready")
    i = 0
    while True:
        for _ in range(50):
            journal.append(event_record(i, ev.ALARM if i % 97 == 0 else ev.INFO))
            i += 1
        time.sleep(0.0005)


if __name__ == "__main__":
    main()
