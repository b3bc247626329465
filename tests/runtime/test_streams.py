"""Video sources for real: a generated video file, and an HTTP MJPEG server on loopback that the test kills
mid-stream and restarts. Records must equal the frames read; drops and reconnects must be recorded."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from auditor_rt.runtime import Auditor
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.frames import Frame
from auditor_rt.runtime.pipeline import run_pipeline
from auditor_rt.runtime.record_writer import SaveRule
from auditor_rt.runtime.streams import FrameBuffer, StreamOptions, is_video_source
from auditor_rt.runtime.video_source import VideoSource


def run_stream(auditor, sources, folder, options=None, save=None, resume=None, **limits):
    """The pipeline on video sources, as ``infer`` runs it (``resume``: an earlier run of the same folder)."""
    source = VideoSource(sources, options, skip_through=resume.last_frame if resume else None, **limits)
    return run_pipeline(auditor, source, folder, save or SaveRule(), append=resume is not None)


def write_video(path: Path, frames: int, size=(96, 72), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (i * 11) % 256, np.uint8)
        cv2.putText(image, str(i), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_video_source_kinds():
    assert is_video_source("clip.mp4") and is_video_source("0") and is_video_source("rtsp://127.0.0.1/x")
    assert is_video_source("http://127.0.0.1:8080/stream.mjpg") and not is_video_source("photo.jpg")
    with pytest.raises(ConfigError, match="stream-buffer"):
        StreamOptions(buffer="newest")


def test_latest_buffer_keeps_the_newest_frame_and_every_event_in_order():
    buffer, stop = FrameBuffer("latest"), threading.Event()
    frame = lambda i: Frame("cam", i, float(i), np.zeros((2, 2, 3), np.uint8))  # noqa: E731
    buffer.put(frame(0), stop)
    buffer.put(Frame("cam", -1, 0.5, None, "disconnect"), stop)
    for i in range(1, 5):
        buffer.put(frame(i), stop)
    buffer.put(Frame("cam", -1, 5.0, None, "end"), stop)
    order = [(item.event, item.index) for item in iter(buffer.get_nowait, None)]
    assert order == [("disconnect", -1), ("frame", 4), ("end", -1)] and buffer.dropped == 4


def test_all_buffer_bounds_frames_and_keeps_events_behind_them():
    buffer, stop = FrameBuffer("all", size=2), threading.Event()
    frame = lambda i: Frame("clip", i, float(i), np.zeros((2, 2, 3), np.uint8))  # noqa: E731
    assert buffer.put(frame(0), stop) and buffer.put(frame(1), stop)
    stop.set()
    assert not buffer.put(frame(2), stop)  # full, and the run is stopping: not queued, not blocked
    buffer.put(Frame("clip", -1, 2.0, None, "end"), stop)
    assert [(item.event, item.index) for item in iter(buffer.get_nowait, None)] == [
        ("frame", 0), ("frame", 1), ("end", -1)]


def test_video_file_gives_one_record_per_frame(artifact_dir, tmp_path):
    video = write_video(tmp_path / "clip.avi", 23)
    with Auditor.load(artifact_dir, batch_size=4) as auditor:
        summary = run_stream(auditor, [str(video), str(tmp_path / "missing.mp4")], tmp_path / "run",
                             save=SaveRule(every_n_seconds=1.0))
        strided = run_stream(auditor, [str(video)], tmp_path / "strided", StreamOptions(vid_stride=3),
                             save=SaveRule(overlays=False))
    rows = records(tmp_path / "run")
    frames = [r for r in rows if r["status"] == "ok"]
    assert summary.ok == len(frames) == summary.decoded[str(video)] == 23
    assert [r["frame"] for r in frames] == list(range(23))
    assert [r["event"] for r in rows if r["status"] == "event"] == ["end"]
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 1 and "missing.mp4" in errors[0]["error"] and "no such video file" in errors[0]["error"]
    assert frames[5]["timestamp"] == pytest.approx(0.5, abs=0.11)  # 10 fps
    assert all(set(r["timings"]) >= {"decode_ms", "queue_ms", "infer_ms"} for r in frames)
    assert all(r["timings"]["decode_ms"] > 0 and r["timings"]["queue_ms"] >= 0 for r in frames)
    assert len(list((tmp_path / "run" / "overlays").glob("*.jpg"))) == 3  # one per second of video: 0, 1, 2 s
    assert [r["frame"] for r in records(tmp_path / "strided") if r["status"] == "ok"] == list(range(0, 23, 3))
    assert strided.decoded[str(video)] == 23 and strided.ok == 8
    print(f"\nvideo: {summary.ok} ok, {summary.errors} error, {summary.events} event, decoded {summary.decoded}")


class MjpegServer:
    """A real HTTP MJPEG server (multipart/x-mixed-replace) on a loopback port, which can be killed and restarted
    on the same port."""

    def __init__(self, port: int = 0):
        self.frames_sent = 0
        self.alive = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                while outer.alive.is_set():
                    image = np.full((72, 96, 3), (outer.frames_sent * 9) % 256, np.uint8)
                    payload = cv2.imencode(".jpg", image)[1].tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(payload)).encode() + b"\r\n\r\n" + payload + b"\r\n")
                    except OSError:
                        return
                    outer.frames_sent += 1
                    time.sleep(1 / 25)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.alive.set()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def kill(self) -> None:
        self.alive.clear()  # open responses end: the client sees the stream stop mid-way
        self.server.shutdown()
        self.server.server_close()


def stream_in_background(artifact_dir, url: str, folder: Path, options: StreamOptions, duration: float):
    """``run_stream`` on one URL in a thread (started); its summary lands in the returned dict."""
    result: dict = {}

    def run():
        with Auditor.load(artifact_dir, batch_size=4) as auditor:
            result["summary"] = run_stream(auditor, [url], folder, options, duration=duration,
                                           save=SaveRule(overlays=False))

    runner = threading.Thread(target=run)
    runner.start()
    return runner, result


def split_at_reconnect(rows: list[dict]) -> tuple[list[str], list[dict], list[dict]]:
    """The event names, and the ok records before and after the last reconnect."""
    events = [r["event"] for r in rows if r["status"] == "event"]
    assert "disconnect" in events and "reconnect" in events, events
    position = [i for i, r in enumerate(rows) if r.get("event") == "reconnect"][-1]
    return (events, [r for r in rows[:position] if r["status"] == "ok"],
            [r for r in rows[position:] if r["status"] == "ok"])


def test_mjpeg_stream_survives_a_server_restart(artifact_dir, tmp_path):
    server = MjpegServer()
    port, url = server.port, server.url
    options = StreamOptions(read_timeout=2.0, reconnect_attempts=8, reconnect_delay=0.2)
    runner, result = stream_in_background(artifact_dir, url, tmp_path / "run", options, duration=6.0)
    time.sleep(2.5)
    server.kill()
    time.sleep(1.0)
    restarted = MjpegServer(port)
    runner.join(timeout=30)
    restarted.kill()
    summary = result["summary"]
    rows = records(tmp_path / "run")
    events, before, after = split_at_reconnect(rows)
    cut = events.index("disconnect")
    assert before and after and summary.errors == 0 and summary.stopped_by == "duration"
    assert all(r["source"] == url for r in rows)
    assert summary.ok <= server.frames_sent + restarted.frames_sent  # no frame invented to fill the gap
    print(f"\nmjpeg: {summary.ok} ok ({len(before)} before the restart, {len(after)} after), events {events[cut:]}, "
          f"{summary.dropped} dropped, server sent {server.frames_sent} + {restarted.frames_sent}")


def test_mjpeg_stream_that_never_returns_ends_with_one_error(artifact_dir, tmp_path):
    server = MjpegServer()
    options = StreamOptions(read_timeout=1.0, reconnect_attempts=2, reconnect_delay=0.1, buffer="latest")
    killer = threading.Timer(1.5, server.kill)
    killer.start()
    with Auditor.load(artifact_dir, batch_size=2) as auditor:
        summary = run_stream(auditor, [server.url], tmp_path / "run", options, duration=20.0,
                             save=SaveRule(overlays=False))
    killer.join()
    rows = records(tmp_path / "run")
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 1 and "did not come back after 2 reconnect attempt(s)" in errors[0]["error"]
    assert summary.ok > 0 and summary.stopped_by == ""  # the source ended by itself, well before 20 s
    assert summary.seconds < 15
    print(f"\nmjpeg gone: {summary.ok} ok, {summary.dropped} dropped (latest), then: {errors[0]['error']}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_stream_that_cannot_be_opened_gives_an_error_record(artifact_dir, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/nothing.mjpg"  # nothing listens there
    options = StreamOptions(read_timeout=1.0, reconnect_attempts=1, reconnect_delay=0.05)
    with Auditor.load(artifact_dir) as auditor:
        summary = run_stream(auditor, [url], tmp_path / "run", options)
    rows = records(tmp_path / "run")
    assert summary.ok == 0 and summary.errors == 1 and "could not be opened" in rows[-1]["error"]


def test_infer_command_on_a_video(artifact_dir, tmp_path):
    from click.testing import CliRunner

    from auditor_rt.cli.main import cli

    video = write_video(tmp_path / "clip.avi", 12)
    result = CliRunner().invoke(cli, ["infer", str(artifact_dir), str(video), "-o", str(tmp_path / "runs"),
                                      "--json", "--vid-stride", "2", "--max-frames", "4", "--only-positive"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] == 4 and summary["stopped_by"] == "max-frames" and summary["errors"] == 0
    frames = [r["frame"] for r in records(Path(summary["run_folder"])) if r["status"] == "ok"]
    assert frames == [0, 2, 4, 6]
    annotated = CliRunner().invoke(cli, ["infer", str(artifact_dir), str(video), "-o", str(tmp_path / "runs"),
                                         "--json", "--save-video", "--no-save-overlays", "--vid-stride", "3"])
    assert annotated.exit_code == 0, annotated.output
    folder = Path(json.loads(annotated.output.strip().splitlines()[-1])["run_folder"])
    capture = cv2.VideoCapture(str(folder / "videos" / "clip.avi"))
    written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = capture.read()
    capture.release()
    assert written == 4 and ok and first.shape == (72, 96, 3)  # frames 0, 3, 6, 9, drawn at the source's size
    assert capture is not None and not (folder / "overlays").exists()
    assert all(r["video"].endswith("clip.avi") for r in records(folder) if r["status"] == "ok")
    if "NONE" in cv2.getBuildInformation().split("GUI:", 1)[-1].split("\n", 1)[0]:  # the headless wheel
        shown = CliRunner().invoke(cli, ["infer", str(artifact_dir), str(video), "--show"])
        assert shown.exit_code == 2 and "--show needs OpenCV with a GUI" in shown.output
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((40, 50, 3), 128, np.uint8))
    mixed = CliRunner().invoke(cli, ["infer", str(artifact_dir), str(photo), str(video), str(tmp_path / "gone.jpg"),
                                     "-o", str(tmp_path / "mixed"), "--no-save-overlays", "--strict"])
    assert mixed.exit_code == 3, mixed.output  # one error record (gone.jpg), so --strict fails the run
    rows = records(tmp_path / "mixed" / "run-001")
    assert [r["status"] for r in rows[:2]] == ["ok", "error"] and all("index" in r for r in rows[:2])  # images
    assert sum(r["status"] == "ok" for r in rows if "frame" in r) == 12  # then every frame of the video
    summary = json.loads((tmp_path / "mixed" / "run-001" / "summary.json").read_text())
    assert (summary["ok"], summary["errors"]) == (13, 1)  # one summary for the run
    assert summary["decoded"] == {str(video): 12}


SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).resolve().parents[1] / "servers" / "rtsp_server.py"


def _rtsp_server_available() -> bool:
    import subprocess

    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('jpegenc') and Gst.ElementFactory.find('rtpjpegpay')")
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_rtsp_server(port: int):
    import subprocess

    process = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        raise RuntimeError(f"the RTSP server did not start: {line} {process.stderr.read()}")
    return process


@pytest.mark.skipif(not _rtsp_server_available(),
                    reason="GStreamer's RTSP server is missing: apt-get install python3-gi "
                           "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good (.ci/run does)")
def test_rtsp_stream_survives_a_server_kill_and_restart(artifact_dir, tmp_path):
    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/test"
    server = start_rtsp_server(port)
    options = StreamOptions(read_timeout=2.0, reconnect_attempts=10, reconnect_delay=0.3)
    runner, result = stream_in_background(artifact_dir, url, tmp_path / "run", options, duration=12.0)
    try:
        time.sleep(4.0)
        server.kill()  # SIGKILL mid-stream: no RTSP teardown, the packets just stop
        server.wait()
        time.sleep(1.0)
        server = start_rtsp_server(port)
        runner.join(timeout=60)
    finally:
        server.kill()
        server.wait()
    summary = result["summary"]
    rows = records(tmp_path / "run")
    events, before, after = split_at_reconnect(rows)
    assert before and after and summary.errors == 0, (len(before), len(after), rows[-3:])
    assert summary.ok <= 15 * 12 + 15  # 15 fps for at most 12 s: nothing invented
    print(f"\nrtsp: {summary.ok} ok ({len(before)} before the kill, {len(after)} after the restart), events {events}")


def test_resume_continues_an_interrupted_video_run(artifact_dir, tmp_path):
    from click.testing import CliRunner

    from auditor_rt.cli.main import cli

    video = write_video(tmp_path / "clip.avi", 20)
    base = ["infer", str(artifact_dir), str(video), "--no-save-overlays", "--json"]
    first = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "runs"), "--max-frames", "7"])
    folder = Path(json.loads(first.output.strip().splitlines()[-1])["run_folder"])
    with open(folder / "results.jsonl", "a") as handle:
        handle.write('{"source": "cut mid-wri')  # a run killed while writing leaves a partial line
    second = CliRunner().invoke(cli, [*base, "--resume", str(folder)])
    assert second.exit_code == 0, second.output
    rows = records(folder)  # every line parses: the partial one was cut
    trace = " ".join(f"{r['status'][0]}{r.get('frame', r.get('event'))}" for r in rows)
    assert [r["frame"] for r in rows if r["status"] == "ok"] == list(range(20)), (trace, second.output[-300:])
    assert [r["event"] for r in rows if r["status"] == "event"] == ["stopped", "end"], trace  # cut, then done
    third = CliRunner().invoke(cli, [*base, "--resume", str(folder)])
    assert third.exit_code == 0 and len(records(folder)) == len(rows), third.output  # nothing left, nothing added


def test_sigterm_stops_a_live_run_and_keeps_what_was_done(artifact_dir, tmp_path, python_exe):
    """The real CLI in its own process on an endless stream: SIGTERM ends it cleanly, every line of the JSONL
    parses, and the summary says it was interrupted."""
    import signal
    import subprocess

    server = MjpegServer()
    try:
        process = subprocess.Popen([python_exe, "-c", "from auditor_rt.cli.main import cli; cli()", "infer", str(artifact_dir), server.url,
                                    "-o", str(tmp_path / "runs"), "--json", "--no-save-overlays"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        results = tmp_path / "runs" / "run-001" / "results.jsonl"
        while time.monotonic() < deadline and (not results.exists() or results.stat().st_size < 2000):
            time.sleep(0.2)  # wait until frames are being written
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        server.kill()
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    rows = records(tmp_path / "runs" / "run-001")
    assert summary["stopped_by"] == "interrupt" and summary["ok"] == sum(r["status"] == "ok" for r in rows) > 0
    print(f"\nsigterm: {summary['ok']} frames kept, exit 0")


def test_a_source_cut_by_max_frames_is_not_taken_as_done(artifact_dir, tmp_path):
    """The reader can reach the end of a file while --max-frames cuts frames it read: that source is recorded as
    'stopped', not 'end', and --resume scores the rest (a large buffer lets the reader finish first, on an idle
    machine)."""
    from auditor_rt.runtime.resume import load_resume_state

    video = write_video(tmp_path / "clip.avi", 20)
    options = StreamOptions(queue_size=64)
    with Auditor.load(artifact_dir, batch_size=8) as auditor:
        run_stream(auditor, [str(video)], tmp_path / "run", options, max_frames=7, save=SaveRule(overlays=False))
        rows = records(tmp_path / "run")
        events = [r for r in rows if r["status"] == "event"]
        # Whether or not the reader got to the end before the stop: 'stopped', never 'end'.
        assert [r["event"] for r in events] == ["stopped"], events
        run_stream(auditor, [str(video)], tmp_path / "run", options, save=SaveRule(overlays=False),
                   resume=load_resume_state(tmp_path / "run"))
    rows = records(tmp_path / "run")
    assert [r["frame"] for r in rows if r["status"] == "ok"] == list(range(20))
    assert [r["event"] for r in rows if r["status"] == "event"][-1:] == ["end"]
