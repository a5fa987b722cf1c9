"""The agent's on-device trigger: what fires, when, and the clip window around it (generated audio only)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from devices.agent.sources import FileReplaySource
from devices.agent.trigger import Capture, ClipCapture, Trigger, TriggerSettings
from tests.devices.agent_support import (
    SR,
    gunshot,
    noise,
    place,
    shots_in_noise,
    sine,
    speech_like,
    write_wav,
)

TOLERANCE_S = 0.010


def run_capture(
    samples: np.ndarray,
    *,
    sr: int = SR,
    block: int = 4800,
    t0: float = 1_000.0,
    settings: TriggerSettings | None = None,
) -> list[Capture]:
    capture = ClipCapture(sr, settings)
    clips: list[Capture] = []
    for start in range(0, len(samples), block):
        clips += capture.feed(samples[start : start + block], t0 + start / sr)
    return clips + capture.flush()


def onset_times(clips: list[Capture], t0: float = 1_000.0) -> list[float]:
    return [clip.onset_time - t0 for clip in clips]


@pytest.mark.parametrize("sr", [48000, 16000, 22050])
def test_it_fires_on_each_gunshot_in_noise_within_10_ms(sr: int) -> None:
    times = [1.3, 3.05, 5.777]
    clips = run_capture(shots_in_noise(times, 7.0, sr=sr), sr=sr, block=sr // 10)
    assert len(clips) == len(times)
    for found, expected in zip(onset_times(clips), times, strict=True):
        assert abs(found - expected) <= TOLERANCE_S


def test_it_fires_on_a_quieter_shot_in_louder_street_noise() -> None:
    y = noise(4.0, -40.0)
    place(y, gunshot(peak=0.5), 2.5)  # its loudest millisecond stands about 24 dB over the background
    clips = run_capture(y)
    assert [round(t, 2) for t in onset_times(clips)] == [2.5]


def test_onset_is_found_regardless_of_how_the_stream_is_cut_into_blocks() -> None:
    y = shots_in_noise([0.9, 2.4], 4.0)
    expected = onset_times(run_capture(y, block=len(y)))
    for block in (160, 1000, 4800, 48000):
        found = onset_times(run_capture(y, block=block))
        assert found == pytest.approx(expected, abs=0.002)
    assert expected == pytest.approx([0.9, 2.4], abs=TOLERANCE_S)


def test_steady_loud_noise_never_fires() -> None:
    y = np.concatenate([noise(1.0, -60.0), noise(8.0, -12.0, seed=5)])  # including the noise switching on
    assert run_capture(y) == []


def test_a_sine_never_fires_even_when_it_starts_abruptly() -> None:
    y = np.concatenate([noise(1.0, -60.0), sine(5.0, amp=0.5) + noise(5.0, -60.0, seed=2)])
    assert run_capture(y) == []


def test_speech_level_modulated_noise_never_fires() -> None:
    y = noise(12.0, -55.0) + speech_like(12.0, level_dbfs=-18.0)
    assert run_capture(y) == []


def test_quiet_ambience_with_soft_clicks_never_fires() -> None:
    y = noise(5.0, -80.0)
    for k, t in enumerate([1.0, 2.5, 4.0]):
        place(y, gunshot(peak=0.003, seed=k), t)  # sharp, but only about -50 dBFS at its peak
    assert run_capture(y) == []


def test_the_same_quiet_clicks_fire_when_the_level_floor_is_lowered() -> None:
    y = noise(5.0, -80.0)
    for k, t in enumerate([1.0, 2.5, 4.0]):
        place(y, gunshot(peak=0.003, seed=k), t)
    settings = replace(TriggerSettings(), min_peak_dbfs=-60.0)
    assert onset_times(run_capture(y, settings=settings)) == pytest.approx([1.0, 2.5, 4.0], abs=TOLERANCE_S)


def test_refractory_period_merges_a_burst_into_one_clip_at_the_first_round() -> None:
    burst = [2.0, 2.1, 2.2, 2.3, 2.4]  # automatic fire, 10 rounds a second
    clips = run_capture(shots_in_noise([*burst, 4.0], 6.0))
    assert onset_times(clips) == pytest.approx([2.0, 4.0], abs=TOLERANCE_S)


def test_refractory_period_is_configurable() -> None:
    y = shots_in_noise([1.0, 1.6, 2.2], 4.0)
    assert len(run_capture(y)) == 1 + 1  # 1.0 and 2.2; 1.6 falls inside the default 1 s
    short = replace(TriggerSettings(), refractory_s=0.3)
    assert onset_times(run_capture(y, settings=short)) == pytest.approx([1.0, 1.6, 2.2], abs=TOLERANCE_S)


def test_clip_spans_half_a_second_before_to_one_and_a_half_after_the_onset() -> None:
    y = shots_in_noise([2.0], 5.0)
    [clip] = run_capture(y, t0=1_000.0)
    onset = round((clip.onset_time - 1_000.0) * SR)
    assert clip.trigger_offset_s == pytest.approx(0.5, abs=1 / SR)
    assert clip.duration_s == pytest.approx(2.0, abs=1 / SR)
    assert clip.start_time == pytest.approx(1_000.0 + (onset - SR // 2) / SR, abs=1e-6)
    # The clip is exactly the recorded samples, not a re-synthesis.
    np.testing.assert_array_equal(clip.samples, y[onset - SR // 2 : onset + 3 * SR // 2])


def test_window_bounds_follow_the_settings() -> None:
    y = shots_in_noise([2.0], 5.0)
    capture = ClipCapture(SR, pre_s=0.25, post_s=1.0)
    clips = capture.feed(y, 0.0) + capture.flush()
    [clip] = clips
    assert clip.trigger_offset_s == pytest.approx(0.25, abs=1 / SR)
    assert clip.duration_s == pytest.approx(1.25, abs=1 / SR)


def test_a_shot_near_the_end_of_input_yields_a_shortened_clip_on_flush() -> None:
    y = shots_in_noise([2.8], 3.5)
    [clip] = run_capture(y)
    assert clip.trigger_offset_s == pytest.approx(0.5, abs=1 / SR)
    assert clip.duration_s == pytest.approx(0.5 + 0.7, abs=2 / SR)


def test_a_shot_soon_after_the_start_gets_a_shorter_pre_window() -> None:
    y = shots_in_noise([0.2], 3.0)
    [clip] = run_capture(y, t0=50.0)
    assert clip.start_time == pytest.approx(50.0)
    assert clip.trigger_offset_s == pytest.approx(0.2, abs=TOLERANCE_S)


def test_timestamps_follow_each_blocks_wall_clock_time() -> None:
    """A capture card's blocks arrive with their own timestamps; a gap between blocks must not smear."""
    y = shots_in_noise([2.35], 4.0)
    capture = ClipCapture(SR)
    clips = []
    for k, start in enumerate(range(0, len(y), 4800)):
        # Every block arrives 1 ms later than nominal (the stream started late).
        clips += capture.feed(y[start : start + 4800], 500.0 + start / SR + (0.001 if k >= 10 else 0.0))
    clips += capture.flush()
    [clip] = clips
    assert clip.onset_time == pytest.approx(500.0 + 2.35 + 0.001, abs=TOLERANCE_S)


def test_trigger_reports_features_that_explain_the_decision() -> None:
    trigger = Trigger(SR)
    onsets = trigger.process(shots_in_noise([1.0], 3.0)) + trigger.finish()
    [onset] = onsets
    settings = trigger.settings
    assert onset.snr_db >= settings.snr_db
    assert onset.rise_s <= settings.max_rise_s
    assert onset.decay_db >= settings.decay_db
    assert onset.peak_dbfs == pytest.approx(20 * np.log10(0.7), abs=0.5)
    assert trigger.background_dbfs == pytest.approx(-50.0, abs=2.0)


def test_replaying_a_generated_file_fires_at_the_shots(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "street.wav", shots_in_noise([0.8, 2.5], 3.5))
    source = FileReplaySource(path, speed=0)
    capture = ClipCapture(SR)
    clips = []
    for block in source:
        assert block.sample_rate == SR
        clips += capture.feed(block.samples, block.start_time)
    clips += capture.flush()
    assert sf.info(path).samplerate == SR
    # Replay at full speed stamps blocks with the replay clock, so check positions within the audio.
    assert [round(clip.onset.sample / SR, 2) for clip in clips] == [0.8, 2.5]


def test_replaying_a_directory_plays_files_in_name_order_and_downmixes_stereo(tmp_path: Path) -> None:
    mono = shots_in_noise([0.5], 1.0)
    sf.write(tmp_path / "b.flac", np.stack([mono, mono], axis=1), SR)
    sf.write(tmp_path / "a.wav", noise(0.5, -50.0), SR)
    (tmp_path / "notes.txt").write_text("not audio")
    source = FileReplaySource(tmp_path, speed=0)
    assert [p.name for p in source.files] == ["a.wav", "b.flac"]
    blocks = list(source)
    assert all(block.samples.ndim == 1 for block in blocks)
    assert sum(len(block.samples) for block in blocks) == round(1.5 * SR)


def test_replay_at_speed_paces_itself_against_the_clock(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "one.wav", noise(2.0, -50.0))
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    blocks = list(FileReplaySource(path, speed=4.0, clock=lambda: now[0], sleep=sleep))
    assert sum(slept) == pytest.approx(2.0 / 4.0 - 0.1 / 4.0)  # the last block is not waited for
    assert blocks[-1].start_time == pytest.approx(100.0 + 1.9 / 4.0)
