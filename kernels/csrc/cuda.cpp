// LibTorch's CUDA state that vsr needs, through c10's device-independent interfaces (so that this
// file needs no CUDA headers):
// - the current stream of a device, for kernels vsr launches itself on LibTorch's tensors
//   (kernels/src/nvrtc.rs): launched there, they are ordered with LibTorch's own work and its
//   caching allocator's reuse of memory;
// - the caching allocator's peak of allocated bytes (`torch.cuda.max_memory_allocated`), for
//   `vsr bench step`'s memory column, comparable with PyTorch's.
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstring>
#include <exception>

static void message(const std::exception &e, char *error, int error_len) {
  std::strncpy(error, e.what(), error_len - 1);
  error[error_len - 1] = 0;
}

extern "C" int vsr_tch_current_stream(int device, void **stream, char *error, int error_len) {
  try {
    const c10::Device d(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    const auto *impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    *stream = impl->getStream(d).native_handle();
    return 0;
  } catch (const std::exception &e) {
    message(e, error, error_len);
    return 1;
  }
}

// The peak of allocated bytes on `device` since the last reset; then, if `reset`, a new period
// starts from the current allocation.
extern "C" int vsr_tch_peak_allocated(int device, int reset, unsigned long long *bytes, char *error, int error_len) {
  try {
    auto *allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    const auto d = static_cast<c10::DeviceIndex>(device);
    const auto stats = allocator->getDeviceStats(d);
    *bytes = static_cast<unsigned long long>(
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
    if (reset) allocator->resetPeakStats(d);
    return 0;
  } catch (const std::exception &e) {
    message(e, error, error_len);
    return 1;
  }
}
