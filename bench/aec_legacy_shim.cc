// bench/aec_legacy.py: the legacy WebRTC AEC (webrtc-audio-processing 0.3) behind a C API for ctypes.
#include <webrtc/modules/audio_processing/include/audio_processing.h>
using namespace webrtc;
extern "C" {
void* aec2_new(int level, int extended, int agnostic) {
  Config cfg;
  cfg.Set<ExtendedFilter>(new ExtendedFilter(extended != 0));
  cfg.Set<DelayAgnostic>(new DelayAgnostic(agnostic != 0));
  AudioProcessing* apm = AudioProcessing::Create(cfg);
  apm->echo_cancellation()->Enable(true);
  apm->echo_cancellation()->set_suppression_level(static_cast<EchoCancellation::SuppressionLevel>(level));
  apm->high_pass_filter()->Enable(false);
  return apm;
}
int aec2_reverse(void* h, const float* x, int n, int rate) {
  const float* ch[1] = {x};
  return static_cast<AudioProcessing*>(h)->AnalyzeReverseStream(ch, n, rate, AudioProcessing::kMono);
}
int aec2_process(void* h, const float* x, float* y, int n, int rate, int delay_ms) {
  AudioProcessing* apm = static_cast<AudioProcessing*>(h);
  apm->set_stream_delay_ms(delay_ms);
  const float* in[1] = {x};
  float* out[1] = {y};
  return apm->ProcessStream(in, n, rate, AudioProcessing::kMono, rate, AudioProcessing::kMono, out);
}
void aec2_free(void* h) { delete static_cast<AudioProcessing*>(h); }
}
