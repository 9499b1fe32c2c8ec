"""Every durability claim, held against SIGKILL at random points, hundreds of times in one run.

A helper process imports the store once, then, round after round, forks a worker that opens
the store and writes through every path that acknowledges durability: blocking ``insert``,
``insert_nowait``'s call-back, ``apply_many_nowait``'s call-back, with group commit, log
segments rolling, background checkpoints and compactions going on. The worker reports each
acknowledgement on a pipe only once it has it; the helper kills the worker at a random moment
(sometimes while it is still opening the store, so recovery itself gets killed too), passes
the acknowledgements up, and the test reopens the store and checks that:

* every acknowledged record is there, with its value and guid (no acknowledged record lost);
* every record the store holds reads back whole: its value is the one its family and time
  determine (no torn record read), and the open never takes a torn tail for damage.

Forking from a warm process keeps a round near 50 ms, so 200 rounds stay well inside a
minute on 2 busy cores.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cellframe.store import Store

ROUNDS = 200
PARTITIONS = 16

_HELPER = textwrap.dedent("""
    import hashlib, os, random, signal, sys, threading, time
    from cellframe.store import Record, Retention, Store, content_digest

    directory, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)

    def value_of(family, t):
        seed = hashlib.blake2b(f"{family}/{t}".encode(), digest_size=8).digest()
        return seed * (1 + t % 37)

    def worker(round_no, out):
        store = Store(directory, partitions=16, segment_bytes=48 << 10,
                      checkpoint_bytes=24 << 10)
        lock = threading.Lock()

        def ack(family, t, guid):
            with lock:
                os.write(out, f"{family} {t} {guid}\\n".encode())

        base = (round_no + 1) << 24

        def blocking(tid):
            for i in range(1 << 20):
                family, t = f"b{tid}-{i % 7}", base + i
                ack(family, t, store.insert(family, value_of(family, t), time=t).guid)

        def nowait():
            slots = threading.Semaphore(16)
            for i in range(1 << 20):
                family, t = f"n-{i % 5}", base + i
                slots.acquire()

                def done(receipt, error, family=family, t=t):
                    if error is None:
                        ack(family, t, receipt.guid)
                    slots.release()

                store.insert_nowait(family, value_of(family, t), done, time=t)

        def replicas():
            for i in range(1 << 20):
                batch = []
                for j in range(20):
                    family, t = f"r-{j % 3}", base + i * 20 + j
                    value = value_of(family, t)
                    batch.append(Record(family, t, value, (9 << 48) | (t & 0xFFFFFFFFFFFF),
                                        content_digest(family, t, value)))
                landed = threading.Event()

                def done(failed, error, batch=batch):
                    if failed == 0:
                        for record in batch:
                            ack(record.family, record.time, record.guid)
                    landed.set()

                store.apply_many_nowait(batch, done)
                landed.wait()

        def compactor():
            while True:
                time.sleep(0.01)
                store.compact_all(Retention(newest=1 << 30))  # keeps every record

        for target, args in ((blocking, (0,)), (blocking, (1,)), (nowait, ()),
                             (replicas, ()), (compactor, ())):
            threading.Thread(target=target, args=args, daemon=True).start()
        os.write(out, b"open\\n")
        threading.Event().wait()

    for round_no in range(rounds):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                worker(round_no, write_end)
            finally:
                os._exit(1)
        os.close(write_end)
        time.sleep(rng.uniform(0.0, 0.09))  # from the fork: often inside the open
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as reported:
            lines = reported.read().decode().splitlines()
        acked = [line for line in lines if line != "open"]
        sys.stdout.write(f"round {round_no} {int('open' in lines)} {len(acked)}\\n")
        sys.stdout.writelines(line + "\\n" for line in acked)
        sys.stdout.write("killed\\n")
        sys.stdout.flush()
        if sys.stdin.readline().strip() != "go":  # the test has checked the store
            break
""")


def value_of(family: str, t: int) -> bytes:
    """The value a record of ``family`` at ``t`` holds (the helper writes the same)."""
    seed = hashlib.blake2b(f"{family}/{t}".encode(), digest_size=8).digest()
    return seed * (1 + t % 37)


def check_whole(store: Store) -> int:
    """Read every record the store holds; each must be whole. Returns how many."""
    count = 0
    for partition in range(PARTITIONS):
        for record in store.records_since(partition, 0, 1 << 30):
            assert record.value == value_of(record.family, record.time), \
                f"torn or mixed record read: {record.family} at {record.time}"
            count += 1
    return count


@pytest.mark.slow
def test_no_acknowledged_record_is_lost_and_none_is_read_torn_across_random_kills(
        tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    helper = subprocess.Popen([sys.executable, "-c", _HELPER, str(tmp_path), str(ROUNDS),
                               str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    started, rounds, opened, acked_total = time.monotonic(), 0, 0, 0
    try:
        for _ in range(ROUNDS):
            head = helper.stdout.readline().split()
            assert head[:1] == ["round"], f"helper stopped (seed {seed}): " \
                f"{helper.stderr.read() if helper.poll() is not None else head}"
            opened += int(head[2])
            acked = []
            while (line := helper.stdout.readline().strip()) != "killed":
                family, t, guid = line.split()
                acked.append((family, int(t), int(guid)))
            with Store(tmp_path, partitions=PARTITIONS) as store:
                for family, t, guid in acked:
                    found = store.select(family, at=t)
                    assert found is not None and found.time == t, \
                        f"round {rounds} (seed {seed}): acknowledged {family} at {t} is lost"
                    assert (found.value, found.guid) == (value_of(family, t), guid), \
                        f"round {rounds} (seed {seed}): {family} at {t} reads otherwise"
                if rounds % 25 == 0:
                    check_whole(store)
            acked_total += len(acked)
            rounds += 1
            helper.stdin.write("go\n")
            helper.stdin.flush()
    finally:
        helper.kill()
        helper.wait()
    with Store(tmp_path, partitions=PARTITIONS) as store:
        held = check_whole(store)
    took = time.monotonic() - started
    assert rounds == ROUNDS
    # the kills landed both inside the open and while records were being acknowledged
    assert 0 < opened < ROUNDS and acked_total > 10 * ROUNDS, (opened, acked_total)
    assert held >= acked_total
    print(f"{rounds} kills in {took:.1f} s, {acked_total} acknowledged records, "
          f"{held} held, {ROUNDS - opened} killed while opening (seed {seed})")
