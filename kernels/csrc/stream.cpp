// LibTorch's current CUDA stream of a device, for kernels vsr launches itself on LibTorch's
// tensors (kernels/src/batch_norm.rs): launched there, they are ordered with LibTorch's own work
// and its caching allocator's reuse of memory. Through c10's device-independent interface, so
// that this file needs no CUDA headers.
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstring>
#include <exception>

extern "C" int vsr_tch_current_stream(int device, void **stream, char *error, int error_len) {
  try {
    const c10::Device d(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    const auto *impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    *stream = impl->getStream(d).native_handle();
    return 0;
  } catch (const std::exception &e) {
    std::strncpy(error, e.what(), error_len - 1);
    error[error_len - 1] = 0;
    return 1;
  }
}
