// oneDNN 2-D convolutions (forward, input gradient, kernel gradient) as XLA FFI handlers.
//
// Layouts are seg_jax's: activations NHWC, kernels HWIO, float32. Activations are handed to
// oneDNN as they are (its NHWC kernels are its fast path, as in PyTorch's channels_last); the
// kernel is reordered to (or, for its gradient, from) the blocked layout oneDNN picks.
// Primitives (and a buffer for the reordered kernel) are built once per shape and cached.
// One primitive runs at a time (a mutex): each uses the whole OpenMP team (the cores of the
// process's affinity mask), so two XLA threads calling at once would otherwise run two full
// teams on the same cores.
//
// The Python module exposes one PyCapsule per handler for jax.ffi.register_ffi_target.

#include <Python.h>

#include <array>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

enum class Pass { kForward, kInputGradient, kKernelGradient };

// Everything that determines a primitive: the pass, x (N,H,W,C), kernel (kh,kw,C,O),
// strides, dilations and paddings (top, bottom, left, right).
using Key = std::tuple<int, std::array<int64_t, 4>, std::array<int64_t, 4>,
                       std::array<int64_t, 8>>;

struct Geometry {
  memory::dims src, weights, dst, strides, dilations, pad_lo, pad_hi;
};

struct Cached {
  dnnl::primitive conv;
  memory::desc user_weights;     // HWIO as seg_jax stores it
  memory::desc conv_weights;     // the layout the primitive wants
  memory::desc user_activation;  // the NHWC tensors the primitive reads and writes
  memory::desc user_output;
  dnnl::reorder weights_reorder;  // user -> conv (forward, input gradient) or back
  bool needs_reorder = false;
  memory reordered;  // the kernel (or its gradient) in conv_weights' layout, reused per call
  // Our own scratchpads: oneDNN's default one is thread-local to the thread that created the
  // primitive and is reallocated when that thread creates a larger one, while XLA may run
  // the primitive from another thread (FCN-8s crashed in a GEMM convolution's im2col so).
  memory scratchpad, reorder_scratchpad;
};

struct State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  std::map<Key, std::unique_ptr<Cached>> cache;
};

State& state() {
  static State* s = new State();  // never destroyed: XLA may call during interpreter exit
  return *s;
}

memory::desc Desc(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

std::unique_ptr<Cached> Build(Pass pass, const Geometry& g, dnnl::engine& engine) {
  auto src = Desc(g.src, Tag::nhwc), dst = Desc(g.dst, Tag::nhwc);
  auto any_weights = Desc(g.weights, Tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto forward = dnnl::convolution_forward::primitive_desc(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      any_weights, dst, g.strides, g.dilations, g.pad_lo, g.pad_hi, attr);
  auto out = std::make_unique<Cached>();
  out->user_weights = Desc(g.weights, Tag::hwio);
  if (pass == Pass::kForward) {
    out->conv = dnnl::convolution_forward(forward);
    out->scratchpad = memory(forward.scratchpad_desc(), engine);
    out->conv_weights = forward.weights_desc();
    out->user_activation = src;
    out->user_output = dst;
  } else if (pass == Pass::kInputGradient) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, any_weights, dst, g.strides,
        g.dilations, g.pad_lo, g.pad_hi, forward, attr);
    out->conv = dnnl::convolution_backward_data(pd);
    out->scratchpad = memory(pd.scratchpad_desc(), engine);
    out->conv_weights = pd.weights_desc();
    out->user_activation = dst;
    out->user_output = src;
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, any_weights, dst, g.strides,
        g.dilations, g.pad_lo, g.pad_hi, forward, attr);
    out->conv = dnnl::convolution_backward_weights(pd);
    out->scratchpad = memory(pd.scratchpad_desc(), engine);
    out->conv_weights = pd.diff_weights_desc();
    out->user_activation = src;
    out->user_output = dst;  // unused: the output is the kernel gradient
  }
  out->needs_reorder = out->conv_weights != out->user_weights;
  if (out->needs_reorder) {
    out->reordered = memory(out->conv_weights, engine);
    auto reorder_pd =
        pass == Pass::kKernelGradient
            ? dnnl::reorder::primitive_desc(engine, out->conv_weights, engine,
                                            out->user_weights, attr)
            : dnnl::reorder::primitive_desc(engine, out->user_weights, engine,
                                            out->conv_weights, attr);
    out->weights_reorder = dnnl::reorder(reorder_pd);
    out->reorder_scratchpad = memory(reorder_pd.scratchpad_desc(), engine);
  }
  return out;
}

// x: (N,H,W,C), kernel: (kh,kw,C,O), y: (N,Ho,Wo,O); sizes in oneDNN's (N,C,H,W)/(O,I,H,W).
ffi::Error Run(Pass pass, ffi::Span<const int64_t> x, ffi::Span<const int64_t> k,
               ffi::Span<const int64_t> y, const std::array<int64_t, 8>& params,
               void* activation, void* weights, void* output) {
  if (x.size() != 4 || k.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: every operand must have rank 4");
  }
  Geometry g;
  g.src = {x[0], x[3], x[1], x[2]};
  g.weights = {k[3], k[2], k[0], k[1]};
  g.dst = {y[0], y[3], y[1], y[2]};
  g.strides = {params[0], params[1]};
  g.dilations = {params[2] - 1, params[3] - 1};  // oneDNN counts the inserted zeros
  g.pad_lo = {params[4], params[6]};
  g.pad_hi = {params[5], params[7]};
  Key key{static_cast<int>(pass), {x[0], x[1], x[2], x[3]}, {k[0], k[1], k[2], k[3]}, params};
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  try {
    auto& entry = s.cache[key];
    if (!entry) entry = Build(pass, g, s.engine);
    Cached& c = *entry;
    memory user_weights(c.user_weights, s.engine, weights);
    memory conv_weights = c.needs_reorder ? c.reordered : user_weights;
    memory in(c.user_activation, s.engine, activation);
    auto reorder = [&](memory& from, memory& to) {
      c.weights_reorder.execute(s.stream, {{DNNL_ARG_FROM, from},
                                           {DNNL_ARG_TO, to},
                                           {DNNL_ARG_SCRATCHPAD, c.reorder_scratchpad}});
    };
    if (pass == Pass::kForward) {
      if (c.needs_reorder) reorder(user_weights, conv_weights);
      c.conv.execute(s.stream, {{DNNL_ARG_SRC, in},
                                {DNNL_ARG_WEIGHTS, conv_weights},
                                {DNNL_ARG_DST, memory(c.user_output, s.engine, output)},
                                {DNNL_ARG_SCRATCHPAD, c.scratchpad}});
    } else if (pass == Pass::kInputGradient) {
      if (c.needs_reorder) reorder(user_weights, conv_weights);
      c.conv.execute(s.stream, {{DNNL_ARG_DIFF_DST, in},
                                {DNNL_ARG_WEIGHTS, conv_weights},
                                {DNNL_ARG_DIFF_SRC, memory(c.user_output, s.engine, output)},
                                {DNNL_ARG_SCRATCHPAD, c.scratchpad}});
    } else {
      // Here `weights` is dy (N,Ho,Wo,O) and `output` the kernel gradient (HWIO).
      memory dy(Desc(g.dst, Tag::nhwc), s.engine, weights);
      memory user_grad(c.user_weights, s.engine, output);
      memory conv_grad = c.needs_reorder ? c.reordered : user_grad;
      c.conv.execute(s.stream, {{DNNL_ARG_SRC, in},
                                {DNNL_ARG_DIFF_DST, dy},
                                {DNNL_ARG_DIFF_WEIGHTS, conv_grad},
                                {DNNL_ARG_SCRATCHPAD, c.scratchpad}});
      if (c.needs_reorder) reorder(conv_grad, user_grad);
    }
    s.stream.wait();
  } catch (const std::exception& e) {  // dnnl::error, std::bad_alloc: never cross into XLA
    s.cache.erase(key);
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

std::array<int64_t, 8> Params(int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt,
                              int64_t pb, int64_t pl, int64_t pr) {
  return {sh, sw, dh, dw, pt, pb, pl, pr};
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                   ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t dh,
                   int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Run(Pass::kForward, x.dimensions(), kernel.dimensions(), y->dimensions(),
             Params(sh, sw, dh, dw, pt, pb, pl, pr), x.untyped_data(), kernel.untyped_data(),
             y->untyped_data());
}

ffi::Error InputGradient(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                         ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t dh,
                         int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Run(Pass::kInputGradient, dx->dimensions(), kernel.dimensions(), dy.dimensions(),
             Params(sh, sw, dh, dw, pt, pb, pl, pr), dy.untyped_data(), kernel.untyped_data(),
             dx->untyped_data());
}

ffi::Error KernelGradient(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dk, int64_t sh, int64_t sw, int64_t dh,
                          int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Run(Pass::kKernelGradient, x.dimensions(), dk->dimensions(), dy.dimensions(),
             Params(sh, sw, dh, dw, pt, pb, pl, pr), x.untyped_data(), dy.untyped_data(),
             dk->untyped_data());
}

}  // namespace

#define SEG_JAX_CONV_BINDING()           \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Ret<ffi::Buffer<ffi::F32>>()       \
      .Attr<int64_t>("stride_h")          \
      .Attr<int64_t>("stride_w")          \
      .Attr<int64_t>("dilation_h")        \
      .Attr<int64_t>("dilation_w")        \
      .Attr<int64_t>("pad_top")           \
      .Attr<int64_t>("pad_bottom")        \
      .Attr<int64_t>("pad_left")          \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SegJaxOnednnConvForward, Forward, SEG_JAX_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SegJaxOnednnConvInputGradient, InputGradient,
                              SEG_JAX_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SegJaxOnednnConvKernelGradient, KernelGradient,
                              SEG_JAX_CONV_BINDING());

static PyObject* Version(PyObject*, PyObject*) {
  const dnnl_version_t* v = dnnl_version();
  return PyUnicode_FromFormat("%d.%d.%d", v->major, v->minor, v->patch);
}

static PyMethodDef kMethods[] = {
    {"onednn_version", Version, METH_NOARGS, "Version of the oneDNN library loaded."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_onednn_conv",
                              "oneDNN convolution handlers for XLA's FFI.", -1, kMethods};

PyMODINIT_FUNC PyInit__onednn_conv() {
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr) return nullptr;
  const std::pair<const char*, void*> handlers[] = {
      {"forward", reinterpret_cast<void*>(SegJaxOnednnConvForward)},
      {"input_gradient", reinterpret_cast<void*>(SegJaxOnednnConvInputGradient)},
      {"kernel_gradient", reinterpret_cast<void*>(SegJaxOnednnConvKernelGradient)}};
  for (const auto& [name, fn] : handlers) {
    PyObject* capsule = PyCapsule_New(fn, nullptr, nullptr);
    if (capsule == nullptr || PyModule_AddObject(module, name, capsule) < 0) {
      Py_XDECREF(capsule);
      Py_DECREF(module);
      return nullptr;
    }
  }
  return module;
}
