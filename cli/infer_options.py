"""``infer``'s option groups: each reaches the command as the object it configures."""

from __future__ import annotations

import click

from auditor_rt.cli.options import option_group


def _stream_settings(max_frames, duration, **options) -> dict:
    from auditor_rt.runtime.streams import StreamOptions

    return {"options": StreamOptions(**options), "max_frames": max_frames, "duration": duration}


video_options = option_group(
    "video", _stream_settings,
    click.option("--vid-stride", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Video sources: score every Nth frame."),
    click.option("--stream-buffer", "buffer", type=click.Choice(["all", "latest"]), default="all", show_default=True,
                 help="Video sources: 'all' scores every frame; 'latest' keeps only the newest (low latency on live "
                      "streams; drops are counted)."),
    click.option("--read-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                 help="Seconds before a blocked network read is cut."),
    click.option("--reconnect-attempts", type=click.IntRange(min=0), default=5, show_default=True,
                 help="Live streams: reopen attempts after a drop (backoff doubles each time)."),
    click.option("--reconnect-delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
                 help="Live streams: seconds before the first reopen attempt."),
    click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Video sources: stop after N frames."),
    click.option("--duration", type=click.FloatRange(min=0.1), default=None,
                 help="Video sources: stop after S seconds."),
)


def _save_rule(save_video, **rule):
    from auditor_rt.runtime.record_writer import SaveRule

    return SaveRule(video=save_video, **rule)  # "video" is the name of the video options' group


save_options = option_group(
    "save", _save_rule,
    click.option("--save-overlays/--no-save-overlays", "overlays", default=True, show_default=True),
    click.option("--only-positive", is_flag=True, help="Save overlays of risk images and frames only (every input "
                 "still gets its record)."),
    click.option("--every-n-seconds", type=click.FloatRange(min=0), default=0.0,
                 help="Video sources: save at most one overlay per source every S seconds of video."),
    click.option("--save-maps", "raw_maps", is_flag=True,
                 help="Also write the raw maps as float32 .npy files under maps/ (risk_map, heatmap and the "
                      "--explain map), named in each record."),
    click.option("--save-video", is_flag=True,
                 help="Video sources: also write an annotated video per source (videos/NAME.avi, every scored "
                      "frame)."),
    click.option("--show", is_flag=True,
                 help="Video sources: show each scored frame in a window (needs a display and OpenCV with a GUI)."),
)

view_options = option_group(
    "view", lambda **view: view,
    click.option("--map-smooth", "smooth", type=click.FloatRange(min=0), default=4.0, show_default=True, metavar="SIGMA",
                 help="Display smoothing of --explain maps: a Gaussian sigma in model-input pixels (0: raw pixels). "
                      "Only the pictures; records and --save-maps keep the raw maps."),
    click.option("--heatmap-scale", type=click.Choice(["absolute", "image"]), default="absolute", show_default=True,
                 help="'absolute': heat on the scale fixed on validation data at training time, so a confident "
                      "negative looks cool; 'image': min-max per image (every image gets a hot spot). Artifacts "
                      "without an absolute scale use 'image'."),
)
