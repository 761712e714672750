// LibTorch's autograd with explicit output gradients, for vsr's training layers on LibTorch.
//
// tch's `run_backward` seeds every root with ones, so a layer's backward for an output gradient
// dy had to go through the scalar sum(y * dy): a product and a reduction over the whole output in
// the forward, and the product's backward (dy copied once more) before cuDNN's kernels even ran.
// `vsr_tch_backward` seeds the roots with the given gradients (torch::autograd::grad's
// grad_outputs), which is what PyTorch's own `y.backward(dy)` does.
//
// cuDNN's convolution backward takes TF32 from LibTorch's process-wide setting (what
// `torch.backends.cudnn.conv.fp32_precision` sets), not from the forward's `allow_tf32`:
// `allow_tf32` sets it for the backward, so that vsr's `ConvPrecision::F32` holds there too. The
// setting stays after the call (every backward sets it the same way, from the one process-wide
// `ConvPrecision`), so LibTorch's own convolutions outside vsr's graphs follow it as well; cuDNN's
// RNN setting is left alone (PyTorch's getter without an operation, which would then see the two
// differ and refuse, is not called in vsr).
//
// Tensors cross as tch's handles (`at::Tensor*`, tch's C_tensor); the returned ones are new
// handles owned by the caller (tch frees them with `delete`).
#include <ATen/Context.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstring>
#include <exception>
#include <vector>

extern "C" int vsr_tch_backward(at::Tensor **roots, at::Tensor **grads, int nroots,
                                at::Tensor **inputs, int ninputs, at::Tensor **outputs,
                                int allow_tf32, char *error, int error_len) {
  try {
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV,
                                            allow_tf32 ? at::Float32Precision::TF32
                                                       : at::Float32Precision::IEEE);
    torch::autograd::variable_list ys, dys, xs;
    for (int i = 0; i < nroots; ++i) {
      ys.push_back(*roots[i]);
      dys.push_back(*grads[i]);
    }
    for (int i = 0; i < ninputs; ++i) xs.push_back(*inputs[i]);
    auto gs = torch::autograd::grad(ys, xs, dys, /*retain_graph=*/false, /*create_graph=*/false,
                                    /*allow_unused=*/true);
    for (int i = 0; i < ninputs; ++i) outputs[i] = new at::Tensor(gs[i]);
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = 0;
    }
    return 1;
  }
}
