"""The decoder pool: real decoder processes, crashed, starved of memory, stopped at a deadline and killed on
purpose, and the pixels they return compared with decoding in this process."""

from __future__ import annotations

import os
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from auditor_rt.runtime.decoder_pool import Decoded, DecoderPool
from auditor_rt.runtime.errors import DecodeTooCostlyError, DecoderCrashError, ImageDecodeError, ImageTooLargeError
from auditor_rt.runtime.imageio import decode_image, resize_image

from hostile_images import CRASHING_APNG, OS2_BMP, memory_hungry_png, mutated_images, png, slow_png


@pytest.fixture(scope="module")
def pool():
    with DecoderPool(2, deadline_s=3) as pool:
        yield pool


def _photo(height=61, width=83, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)


def test_pixels_match_decoding_in_process(pool, tmp_path):
    pixels = _photo()
    jpeg = cv2.imencode(".jpg", pixels)[1].tobytes()
    (tmp_path / "a.jpg").write_bytes(jpeg)
    for source in (png(pixels), jpeg, str(tmp_path / "a.jpg"), OS2_BMP):
        decoded = pool.decode(source)
        expected = decode_image(source if not isinstance(source, bytes) else source)
        assert decoded.image.dtype == np.uint8 and decoded.size == expected.shape[:2]
        np.testing.assert_array_equal(decoded.image, expected)
    assert pool.decode(png(pixels)).image[5, 7].tolist() == pixels[5, 7].tolist()  # RGB, not BGR


def test_resized_only_matches_resize_of_the_decoded_image():
    pixels = _photo(200, 300)
    with DecoderPool(1, full_images=False, resize=(64, 48)) as pool:
        decoded = pool.decode(png(pixels))
    assert decoded.image is None and decoded.size == (200, 300)
    np.testing.assert_array_equal(decoded.resized, resize_image(pixels, (64, 48)))


def test_a_file_that_crashes_the_decoder_costs_only_itself(pool):
    before = set(pool.pids())
    # SIGSEGV here; by the stack's contents (undefined behaviour in the codec) also SIGABRT, or a hang that the
    # deadline stops: all of them cost only this file
    with pytest.raises((DecoderCrashError, DecodeTooCostlyError), match="crashed.*killed by SIG|hung|deadline"):
        pool.decode(CRASHING_APNG)
    assert set(pool.pids()) != before  # the dead process was replaced
    assert pool.decode(png(_photo())).image.shape == (61, 83, 3)
    assert pool.crashes + pool.timeouts >= 1


def test_crashes_on_other_threads_do_not_touch_good_decodes(pool):
    pixels = _photo()
    good, outcomes = png(pixels), []

    def work(source):
        try:
            outcomes.append(("ok", pool.decode(source).image.shape))
        except (DecoderCrashError, DecodeTooCostlyError):
            outcomes.append(("crash", None))

    threads = [threading.Thread(target=work, args=(CRASHING_APNG if i % 3 == 0 else good,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(kind for kind, _ in outcomes) == ["crash"] * 4 + ["ok"] * 8
    assert all(shape == (61, 83, 3) for kind, shape in outcomes if kind == "ok")


def test_a_decode_past_the_memory_budget_is_too_costly(pool):
    began = time.monotonic()
    with pytest.raises(DecodeTooCostlyError, match="too costly.*memory"):
        pool.decode(memory_hungry_png())  # unbounded, OpenCV zero-fills 4 GB for 10 s first
    assert time.monotonic() - began < 3
    with DecoderPool(1, memory=32 << 20) as small:  # a valid 25-megapixel image, over a 32 MB budget
        with pytest.raises(DecodeTooCostlyError, match="too costly"):
            small.decode(png(np.zeros((5000, 5000, 3), np.uint8)))
        assert small.decode(png(_photo())).image.shape == (61, 83, 3)


def test_a_decode_past_the_deadline_is_stopped(tmp_path):
    (tmp_path / "slow.png").write_bytes(slow_png())
    with DecoderPool(1, deadline_s=0.1) as pool:
        pid = pool.pids()[0]
        pool.decode(png(_photo()))  # started and warm: the deadline counts the decode only
        began = time.monotonic()
        with pytest.raises(DecodeTooCostlyError, match="deadline of 0.1 s"):
            pool.decode(tmp_path / "slow.png")
        assert time.monotonic() - began < 2
        assert pool.pids() != [pid] and not _alive(pid)
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_decoder_killed_on_purpose_mid_decode(tmp_path, sig):
    (tmp_path / "slow.png").write_bytes(slow_png())
    with DecoderPool(1) as pool:
        pool.decode(png(_photo()))
        pid = pool.pids()[0]
        threading.Timer(0.15, os.kill, (pid, sig)).start()
        with pytest.raises(DecoderCrashError, match=f"killed by {sig.name}"):
            pool.decode(tmp_path / "slow.png")
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)


def test_a_decoder_killed_while_idle_is_replaced_without_blaming_the_next_image():
    with DecoderPool(1) as pool:
        pool.decode(png(_photo()))
        os.kill(pool.pids()[0], signal.SIGKILL)
        time.sleep(0.2)
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)


def test_ordinary_errors_keep_their_kind_and_their_process(pool, tmp_path):
    pids = set(pool.pids())
    with pytest.raises(ImageDecodeError, match="no such file"):
        pool.decode(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="truncated PNG"):
        pool.decode(png(_photo())[:60])
    with DecoderPool(1, max_pixels=1000) as small:
        with pytest.raises(ImageTooLargeError, match="over the limit of 1000 pixels"):
            small.decode(png(_photo()))
    assert set(pool.pids()) == pids  # a corrupt file is not a reason to restart a process


def test_closing_the_pool_ends_its_processes():
    pool = DecoderPool(2)
    pool.decode(png(_photo()))
    pids = pool.pids()
    pool.close()
    time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.decode(png(_photo()))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_decode_many_blames_only_the_item_that_crashed(pool, tmp_path):
    good = [png(_photo(seed=seed)) for seed in range(4)]
    (tmp_path / "p.png").write_bytes(good[3])
    sources = [good[0], CRASHING_APNG, good[1], tmp_path / "missing.png", good[2], tmp_path / "p.png"]
    outcomes = pool.decode_many(sources, names=[f"s{i}" for i in range(len(sources))])
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "Decoded", outcomes[1].__class__.__name__, "Decoded", "ImageDecodeError", "Decoded", "Decoded"]
    assert isinstance(outcomes[1], (DecoderCrashError, DecodeTooCostlyError)) and str(outcomes[1]).startswith("s1:")
    for outcome, data in zip([outcomes[0], outcomes[2], outcomes[4], outcomes[5]], good):
        np.testing.assert_array_equal(outcome.image, decode_image(data))


def test_decode_many_blames_the_deadline_on_the_item_that_took_it(tmp_path):
    (tmp_path / "slow.png").write_bytes(slow_png())
    good = [png(_photo(seed=seed)) for seed in range(3)]
    with DecoderPool(1, deadline_s=0.1) as pool:
        pool.warm_up()
        outcomes = pool.decode_many([good[0], tmp_path / "slow.png", good[1], good[2]])
    assert isinstance(outcomes[1], DecodeTooCostlyError) and "slow.png" in str(outcomes[1])
    for outcome, data in zip([outcomes[0], outcomes[2], outcomes[3]], good):
        np.testing.assert_array_equal(outcome.image, decode_image(data))


def test_a_fuzzed_corpus_gives_one_outcome_per_file_and_leaves_the_pool_working():
    """300 mutated files of every format (a fixed seed): each gets an image or an ImageDecodeError (crashes and
    hangs included), and the pool decodes a good image afterwards."""
    corpus = mutated_images(300)
    with DecoderPool(2, deadline_s=3) as pool:
        outcomes = []
        for start in range(0, len(corpus), 8):
            outcomes += pool.decode_many(corpus[start:start + 8])
        assert len(outcomes) == len(corpus)
        assert all(isinstance(outcome, (Decoded, ImageDecodeError)) for outcome in outcomes)
        assert sum(isinstance(outcome, Decoded) for outcome in outcomes) > 50  # the mutations are not all fatal
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)
    print(f"\nfuzz: {sum(isinstance(o, Decoded) for o in outcomes)} decoded, {pool.crashes} crashes, "
          f"{pool.timeouts} past the deadline, of {len(corpus)}")


def test_a_decoder_that_cannot_be_replaced_is_a_clear_error_and_the_pool_recovers(monkeypatch):
    import auditor_rt.runtime.decoder_pool as pool_module
    from auditor_rt.runtime.errors import DecoderUnavailableError

    with DecoderPool(1, deadline_s=3) as pool:
        pool.decode(png(_photo()))
        real = pool_module.DecoderProcess

        def no_processes(*args, **kwargs):
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(pool_module, "DecoderProcess", no_processes)
        with pytest.raises(DecoderUnavailableError, match="cannot start an image decoder process"):
            pool.decode(CRASHING_APNG)  # the crash needs a replacement, and none can start
        monkeypatch.setattr(pool_module, "DecoderProcess", real)
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)  # the next call starts one


class _AsleepProcess:
    """Stands in for a decoder process that has its bytes in memory and sleeps without using CPU (the hang that
    the mutated APNG causes in some environments: the codec longjmps into a dead frame and waits on a lock)."""

    def __init__(self, state: str, cpu_grows: bool = False):
        from auditor_rt.runtime.decoder_protocol import CONTROL, CONTROL_BYTES, mark_decoding, mark_started

        self.shared = bytearray(CONTROL_BYTES)
        CONTROL.pack_into(self.shared, 0, 0, time.monotonic(), 0)
        mark_started(self.shared, 1)
        mark_decoding(self.shared)
        self.state, self.cpu, self.cpu_grows = state, 1.0, cpu_grows

    def wait_readable(self, seconds: float) -> bool:
        time.sleep(max(0.0, seconds))
        return False

    def cpu_and_state(self):
        self.cpu += 0.1 if self.cpu_grows else 0.0
        return self.cpu, self.state


def test_a_decoder_asleep_without_cpu_while_decoding_is_a_hang_not_a_deadline():
    from auditor_rt.runtime.decoder_protocol import read_control

    with DecoderPool(1, deadline_s=5) as pool:
        process = _AsleepProcess("S")
        began = time.monotonic()
        stopped = pool._watch(process, read_control(process.shared), [({}, None, "stuck.png")])
        assert time.monotonic() - began < 2.5
        assert isinstance(stopped[0], DecoderCrashError) and "hung" in str(stopped[0]) and "stuck.png" in str(stopped[0])
        # a busy decoder (CPU growing) or a runnable one waits for the deadline instead
        for busy in (_AsleepProcess("S", cpu_grows=True), _AsleepProcess("R")):
            pool.deadline_s = 1.0
            stopped = pool._watch(busy, read_control(busy.shared), [({}, None, "slow.png")])
            assert isinstance(stopped[0], DecodeTooCostlyError) and "deadline of 1 s" in str(stopped[0])


def test_a_decoder_killed_while_it_starts_is_started_again():
    with DecoderPool(1) as pool:
        os.kill(pool.pids()[0], signal.SIGKILL)  # before it is ready: python and OpenCV are still loading
        assert pool.decode(png(_photo())).image.shape == (61, 83, 3)
