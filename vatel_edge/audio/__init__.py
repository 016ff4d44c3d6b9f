"""Audio subsystem: ALSA capture and playback, resampling, voice activity detection."""
