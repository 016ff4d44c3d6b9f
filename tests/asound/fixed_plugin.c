/*
 * A test-only ALSA I/O plugin: a null device that accepts exactly one rate and one channel count,
 * like a USB microphone or a HAT that only does 48 kHz stereo. Stack the alsa-lib `file` plugin on it
 * for byte-exact capture/playback. Data moves instantly (no real-time pacing), like `type null`.
 *
 *   pcm_type.fixed { lib "/path/libasound_module_pcm_fixed.so" }
 *   pcm.x { type fixed rate 48000 channels 2 }
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>

typedef struct {
	snd_pcm_ioplug_t io;
	snd_pcm_uframes_t boundary;
} fixed_t;

static int fixed_start(snd_pcm_ioplug_t *io) { (void)io; return 0; }
static int fixed_stop(snd_pcm_ioplug_t *io) { (void)io; return 0; }

static int fixed_prepare(snd_pcm_ioplug_t *io)
{
	fixed_t *f = io->private_data;
	snd_pcm_sw_params_t *sw;
	snd_pcm_sw_params_alloca(&sw);
	if (snd_pcm_sw_params_current(io->pcm, sw) == 0)
		snd_pcm_sw_params_get_boundary(sw, &f->boundary);
	return 0;
}

/* Playback: everything written is consumed at once. Capture: the buffer is always full. */
static snd_pcm_sframes_t fixed_pointer(snd_pcm_ioplug_t *io)
{
	fixed_t *f = io->private_data;
	if (io->stream == SND_PCM_STREAM_PLAYBACK)
		return io->appl_ptr;
	if (!f->boundary)
		return io->appl_ptr + io->buffer_size;
	return (io->appl_ptr + io->buffer_size) % f->boundary;
}

static int fixed_close(snd_pcm_ioplug_t *io)
{
	fixed_t *f = io->private_data;
	close(io->poll_fd);
	free(f);
	return 0;
}

static const snd_pcm_ioplug_callback_t fixed_callback = {
	.start = fixed_start,
	.stop = fixed_stop,
	.pointer = fixed_pointer,
	.close = fixed_close,
	.prepare = fixed_prepare,
};

SND_PCM_PLUGIN_DEFINE_FUNC(fixed)
{
	snd_config_iterator_t i, next;
	long rate = 48000, channels = 2;
	fixed_t *f;
	int err;
	unsigned int access = SND_PCM_ACCESS_RW_INTERLEAVED;
	unsigned int format = SND_PCM_FORMAT_S16_LE;

	snd_config_for_each(i, next, conf) {
		snd_config_t *n = snd_config_iterator_entry(i);
		const char *id;
		if (snd_config_get_id(n, &id) < 0)
			continue;
		if (!strcmp(id, "comment") || !strcmp(id, "type") || !strcmp(id, "hint"))
			continue;
		if (!strcmp(id, "rate")) {
			if (snd_config_get_integer(n, &rate) < 0)
				return -EINVAL;
			continue;
		}
		if (!strcmp(id, "channels")) {
			if (snd_config_get_integer(n, &channels) < 0)
				return -EINVAL;
			continue;
		}
		SNDERR("Unknown field %s", id);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->io.version = SND_PCM_IOPLUG_VERSION;
	f->io.name = "vatel-edge test fixed-format null device";
	f->io.callback = &fixed_callback;
	f->io.private_data = f;
	f->io.flags = SND_PCM_IOPLUG_FLAG_BOUNDARY_WA;
	f->io.poll_fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
	f->io.poll_events = stream == SND_PCM_STREAM_PLAYBACK ? POLLOUT : POLLIN;
	if (f->io.poll_fd < 0) {
		free(f);
		return -errno;
	}
	err = snd_pcm_ioplug_create(&f->io, name, stream, mode);
	if (err < 0) {
		close(f->io.poll_fd);
		free(f);
		return err;
	}
	if ((err = snd_pcm_ioplug_set_param_list(&f->io, SND_PCM_IOPLUG_HW_ACCESS, 1, &access)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_list(&f->io, SND_PCM_IOPLUG_HW_FORMAT, 1, &format)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&f->io, SND_PCM_IOPLUG_HW_CHANNELS, channels, channels)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&f->io, SND_PCM_IOPLUG_HW_RATE, rate, rate)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&f->io, SND_PCM_IOPLUG_HW_PERIOD_BYTES, 64, 1024 * 1024)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&f->io, SND_PCM_IOPLUG_HW_PERIODS, 2, 1024)) < 0) {
		snd_pcm_ioplug_delete(&f->io);
		return err;
	}
	*pcmp = f->io.pcm;
	return 0;
}

SND_PCM_PLUGIN_SYMBOL(fixed);
