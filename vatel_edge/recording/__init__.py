"""Session recordings, opt-in ([debug] record_sessions = N, default 0: nothing is recorded, nothing runs).

The last N recordings are kept in `recordings/` of the state directory ([state] directory, else systemd's
$STATE_DIRECTORY), at most [debug] record_max_mb in all (the oldest deleted first). One recording is one
directory, mode 0700, its files mode 0600:

    recordings/<YYYYmmdd-HHMMSS>-<n>/     UTC time of t0; n counts up across restarts (the oldest has the lowest)
      mic.wav        raw microphone, 24 kHz mono PCM16, BEFORE echo cancellation (silence while privacy-muted)
      sent.wav       what was sent to the server as input_audio (after echo cancellation / muting), 24 kHz mono PCM16
      played.wav     what was written to the speaker, 24 kHz mono PCM16
      timeline.json

The three WAVs start at the same instant t0, are equally long and continuous (gaps are zeros): sample i of each
is at t0 + i/24000 s. mic at its capture time; sent at the capture time of the samples it carries (the echo
path's constant latency taken off, so where no canceller acted sent equals mic sample for sample); played at
the time it was heard (Player.on_written's t_heard; what a barge-in dropped from the device buffer is zeroed).
t0 is the oldest raw microphone frame kept in memory (ONSET_LOOKBACK_MS + wake.preroll_ms + 1 s), so the
pre-roll, which is older than the wake, is inside.

timeline.json:
    {"version": 1, "session": "<the server's session id, else n>", "started_at": "<ISO 8601 UTC of t0>",
     "rate": 24000, "files": {"mic": "mic.wav", "sent": "sent.wav", "played": "played.wav"},
     "events": [{"t": <s since t0>, "kind": "<kind>", "text": "<human text>", ...}],
     "erle": [[<t>, <dB>], ...],     # the echo canceller's echo reduction while the agent played (empty: none ran)
     "summary": {"wake_latency_ms", "preroll_ms", "barge_in_stop_ms", "end_reason", "duration_s",
                 "sent_from_s", "dropped", "truncated_at_s"}}
Event kinds: state (old, new, event), wake (reason), speech_started, speech_stopped, transcript (role user|agent,
final), agent_turn_start, agent_turn_end (reason), interrupted, tool_call (name, outcome, id, duration_ms; at the
call), barge_in (source, heard_ms), end (reason). Summary (of the first session in the recording):
wake_latency_ms: the wake to the first input_audio sent; preroll_ms: sent audio captured before the wake;
barge_in_stop_ms: the first barge-in's decision (the server's interruption, or the local detector) to the playback
device dropped, null without one; sent_from_s: where the sent audio starts; dropped: audio items the writer could
not take (zeros instead); truncated_at_s: where the size bound stopped the recording (null: it did not).

When: a recording starts at a wake (CONNECTING) and ends when the daemon is LISTENING again. `vatel-edge record
--seconds S` ({"cmd": "record", "seconds": S} on the control socket) records from now for S s (with the raw
microphone kept from before): a session in progress at the end is recorded to its end, a session that starts
meanwhile is in the same recording, and a request during a recording extends it. It needs record_sessions >= 1.

Never in the way: the taps only append to a ring or a bounded queue (full: the item is dropped and counted); one
writer thread does all file I/O. With record_sessions = 0 no tap is installed and no thread runs.
"""

from vatel_edge.recording.recorder import RECORD_CMD, Recorder, check_recordings, record_command, recordings_root

__all__ = ["RECORD_CMD", "Recorder", "check_recordings", "record_command", "recordings_root"]
