// MLoRA's per-domain low-rank update on a domain-sorted batch, one call per direction.
//
// The shared layer's own matmuls run in PyTorch on the whole batch; these functions add, for
// every segment (d, start, stop) of rows of domain d, the adapter term (x A_d) B_d + b_d and
// its gradients. Segments of the unseen domain (d == D) are skipped: they keep the shared output.
//
// Every product here has one thin side (the rank r, 1-64) and segments of tens to hundreds of
// rows, where BLAS runs at a fraction of its speed and, called per segment from Python, costs
// more in dispatch than in arithmetic. So the products are written out as register-blocked
// loops over float vectors (GCC/Clang vector extensions, built with -march=native: 16 floats
// are one AVX-512 register), and the rows are split over PyTorch's threads.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <vector>

namespace {

// The blocked kernels below must inline into their callers for their accumulators to stay in
// registers: without this, GCC kept one out of line and the forward ran 25 % slower.
#define KERNEL inline __attribute__((always_inline))

// A vector of L floats, and its unaligned view for loads and stores.
template <int L>
struct Vec {
  typedef float type __attribute__((vector_size(L * sizeof(float))));
  typedef float unaligned __attribute__((vector_size(L * sizeof(float)), aligned(alignof(float)), may_alias));
  static KERNEL type load(const float* p) { return *reinterpret_cast<const unaligned*>(p); }
  static KERNEL void store(float* p, type v) { *reinterpret_cast<unaligned*>(p) = v; }
};

// Row-major operands: pointer + leading dimension.
struct In {
  const float* p;
  int64_t ld;
};
struct Out {
  float* p;
  int64_t ld;
};

// Calls chunk.template operator()<L>(c0) over columns [0, n) in chunks of 16, then 8, 4 and 1
// floats: full-width vectors, narrower ones for the remainder and for thin products (n = r).
template <typename F>
KERNEL void by_chunks(int64_t n, F chunk) {
  int64_t c0 = 0;
  for (; c0 + 16 <= n; c0 += 16) chunk.template operator()<16>(c0);
  if (c0 + 8 <= n) chunk.template operator()<8>(c0), c0 += 8;
  if (c0 + 4 <= n) chunk.template operator()<4>(c0), c0 += 4;
  for (; c0 < n; ++c0) chunk.template operator()<1>(c0);
}

// Y[i, :] = (accumulate ? Y[i, :] : 0) + bias + sum_k X[i, k] M[k, :] for NB rows: NB
// accumulators per column chunk, each M chunk loaded once for all NB rows.
template <int NB>
KERNEL void rows_times(int64_t K, int64_t N, In X, In M, Out Y, bool accumulate, const float* bias) {
  by_chunks(N, [&]<int L>(int64_t c0) {
    using V = Vec<L>;
    typename V::type a[NB];
    for (int i = 0; i < NB; ++i) {
      a[i] = accumulate ? V::load(Y.p + i * Y.ld + c0) : typename V::type{};
      if (bias) a[i] += V::load(bias + c0);
    }
    for (int64_t k = 0; k < K; ++k) {
      const typename V::type m = V::load(M.p + k * M.ld + c0);
      for (int i = 0; i < NB; ++i) a[i] += X.p[i * X.ld + k] * m;
    }
    for (int i = 0; i < NB; ++i) V::store(Y.p + i * Y.ld + c0, a[i]);
  });
}

// Y (rows x N) (+)= X (rows x K) M (K x N) [+ bias].
void matmul(int64_t rows, int64_t K, int64_t N, In X, In M, Out Y, bool accumulate, const float* bias = nullptr) {
  constexpr int NB = 8;
  int64_t i = 0;
  for (; i + NB <= rows; i += NB) rows_times<NB>(K, N, {X.p + i * X.ld, X.ld}, M, {Y.p + i * Y.ld, Y.ld}, accumulate, bias);
  for (; i < rows; ++i) rows_times<1>(K, N, {X.p + i * X.ld, X.ld}, M, {Y.p + i * Y.ld, Y.ld}, accumulate, bias);
}

// Right-multiplies by Mt^T for Mt (N x K) contiguous, through a transposed copy made once.
class TimesTransposed {
 public:
  TimesTransposed(const float* mt, int64_t n, int64_t k) : n_(n), k_(k), m_(n * k) {
    for (int64_t j = 0; j < n_; ++j) {
      for (int64_t t = 0; t < k_; ++t) m_[t * n_ + j] = mt[j * k_ + t];
    }
  }

  // Y (rows x N, contiguous) = X (rows x K) Mt^T
  void operator()(int64_t rows, In X, float* Y) const { matmul(rows, k_, n_, X, {m_.data(), n_}, {Y, n_}, false); }

 private:
  int64_t n_, k_;
  std::vector<float> m_;
};

// Z[p, :] += sum_i X[i, p] Y[i, :] for PB columns p of X: a reduction over the rows.
template <int PB>
KERNEL void columns_times(int64_t rows, int64_t Q, In X, In Y, Out Z) {
  by_chunks(Q, [&]<int L>(int64_t c0) {
    using V = Vec<L>;
    typename V::type a[PB];
    for (int p = 0; p < PB; ++p) a[p] = V::load(Z.p + p * Z.ld + c0);
    for (int64_t i = 0; i < rows; ++i) {
      const typename V::type y = V::load(Y.p + i * Y.ld + c0);
      for (int p = 0; p < PB; ++p) a[p] += X.p[i * X.ld + p] * y;
    }
    for (int p = 0; p < PB; ++p) V::store(Z.p + p * Z.ld + c0, a[p]);
  });
}

// Z (P x Q) += X^T Y, X (rows x P), Y (rows x Q).
void matmul_tn(int64_t rows, int64_t P, int64_t Q, In X, In Y, Out Z) {
  int64_t p = 0;
  for (; p + 8 <= P; p += 8) columns_times<8>(rows, Q, {X.p + p, X.ld}, Y, {Z.p + p * Z.ld, Z.ld});
  for (; p + 4 <= P; p += 4) columns_times<4>(rows, Q, {X.p + p, X.ld}, Y, {Z.p + p * Z.ld, Z.ld});
  for (; p < P; ++p) columns_times<1>(rows, Q, {X.p + p, X.ld}, Y, {Z.p + p * Z.ld, Z.ld});
}

// Rows are processed in blocks this tall, every product of a block in turn while its rows of
// x, grad and out are in L1/L2, instead of one pass over the whole segment per product.
constexpr int64_t ROW_BLOCK = 64;

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

// Checks each tensor's sizes (-1: any).
void shapes(std::initializer_list<std::pair<const at::Tensor&, std::vector<int64_t>>> expected) {
  for (const auto& [t, sizes] : expected) {
    bool ok = t.dim() == static_cast<int64_t>(sizes.size());
    for (size_t i = 0; ok && i < sizes.size(); ++i) ok = sizes[i] < 0 || t.size(i) == sizes[i];
    TORCH_CHECK(ok, "segment_lora: a tensor of sizes ", t.sizes(), " where ", sizes, " was expected");
  }
}

using Segments = std::vector<std::array<int64_t, 3>>;  // (domain, start, stop), sorted by domain

// Splits the rows into one contiguous range per thread, as PyTorch's elementwise ops and the
// layer's own matmul do (a thread then works on rows its core has just touched; handing out
// whole segments instead made the forward 30-50 % slower on a batch fresh from the matmul),
// and calls f(thread, d, start, rows, first) for each part of a seen domain's segment within
// a range, in order; `first` is false for the part of a segment that began in the previous
// thread's range. Returns the number of threads used.
template <typename F>
int each_part(const Segments& segments, int64_t domains, int64_t total, F f) {
  for (const auto& [d, start, stop] : segments) {
    TORCH_CHECK(d >= 0 && 0 <= start && start <= stop && stop <= total, "segment (", d, ", ", start, ", ", stop,
                ") outside the batch's ", total, " rows");
  }
  const int threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total / 64));
  const int64_t chunk = (total + threads - 1) / threads;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = t * chunk, hi = std::min(total, lo + chunk);
      for (const auto& [d, start, stop] : segments) {
        const int64_t a = std::max(lo, start), b = std::min(hi, stop);
        if (d < domains && a < b) f(t, d, a, b - a, a == start);
      }
    }
  });
  return threads;
}

}  // namespace

// x (N, in); out (N, out) holding x W^T + b, updated in place; a_t (D, r, in) = A transposed;
// b (D, r, out); bias (D, out). Returns low = x A_d per row (N, r), kept for the backward.
at::Tensor forward(const at::Tensor& x, at::Tensor& out, const at::Tensor& a_t, const at::Tensor& b,
                   const at::Tensor& bias, const Segments& segments) {
  for (auto& [t, name] : {std::pair{x, "x"}, {out, "out"}, {a_t, "A^T"}, {b, "B"}, {bias, "bias"}}) check(t, name);
  const int64_t domains = a_t.size(0), rank = a_t.size(1), n_in = a_t.size(2), n_out = b.size(2);
  shapes({{x, {-1, n_in}}, {out, {x.size(0), n_out}}, {b, {domains, rank, n_out}}, {bias, {domains, n_out}}});
  auto low = at::empty({x.size(0), rank}, x.options());
  const float *xp = x.data_ptr<float>(), *ap = a_t.data_ptr<float>(), *bp = b.data_ptr<float>(),
              *biasp = bias.data_ptr<float>();
  float *outp = out.data_ptr<float>(), *lowp = low.data_ptr<float>();
  each_part(segments, domains, x.size(0), [&](int64_t, int64_t d, int64_t start, int64_t rows, bool) {
    const TimesTransposed times_a(ap + d * rank * n_in, rank, n_in);
    const In bd{bp + d * rank * n_out, n_out};
    for (int64_t i = start; i < start + rows; i += ROW_BLOCK) {
      const int64_t m = std::min(ROW_BLOCK, start + rows - i);
      float* l = lowp + i * rank;
      times_a(m, {xp + i * n_in, n_in}, l);
      matmul(m, rank, n_out, {l, rank}, bd, {outp + i * n_out, n_out}, true, biasp + d * n_out);
    }
  });
  return low;
}

// grad (N, out); x, low as in forward; grad_x (N, in) holding grad W, updated in place, or an
// empty tensor when x needs no gradient. Returns the gradients of A^T (D, r, in), B and bias.
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& low,
                                 at::Tensor& grad_x, const at::Tensor& a_t, const at::Tensor& b,
                                 const Segments& segments) {
  for (auto& [t, name] : {std::pair{grad, "grad"}, {x, "x"}, {low, "low"}, {a_t, "A^T"}, {b, "B"}}) check(t, name);
  const bool has_grad_x = grad_x.numel() > 0;
  if (has_grad_x) check(grad_x, "grad_x");
  const int64_t domains = a_t.size(0), rank = a_t.size(1), n_in = a_t.size(2), n_out = b.size(2), n = x.size(0);
  shapes({{x, {-1, n_in}}, {grad, {n, n_out}}, {low, {n, rank}}, {b, {domains, rank, n_out}}});
  if (has_grad_x) shapes({{grad_x, {n, n_in}}});
  // Gradients by domain; the part of a segment that began in the previous thread's row range
  // goes to the thread's spare set (one domain at most), added in after.
  const int max_threads = std::max(1, at::get_num_threads());
  auto grad_a_t = at::zeros_like(a_t), grad_b = at::zeros_like(b);
  auto grad_bias = at::zeros({domains, n_out}, x.options());
  auto spare_a_t = at::zeros({max_threads, rank, n_in}, x.options());
  auto spare_b = at::zeros({max_threads, rank, n_out}, x.options());
  auto spare_bias = at::zeros({max_threads, n_out}, x.options());
  auto grad_low = at::empty({x.size(0), rank}, x.options());
  std::vector<int64_t> spare(max_threads, -1);  // the domain in thread t's spare set
  const float *gp = grad.data_ptr<float>(), *xp = x.data_ptr<float>(), *lowp = low.data_ptr<float>(),
              *ap = a_t.data_ptr<float>(), *bp = b.data_ptr<float>();
  float *gap = grad_a_t.data_ptr<float>(), *gbp = grad_b.data_ptr<float>(), *gbiasp = grad_bias.data_ptr<float>(),
        *glp = grad_low.data_ptr<float>(), *gxp = has_grad_x ? grad_x.data_ptr<float>() : nullptr;
  float *spare_ap = spare_a_t.data_ptr<float>(), *spare_bp = spare_b.data_ptr<float>(),
        *spare_biasp = spare_bias.data_ptr<float>();
  each_part(segments, domains, x.size(0), [&](int64_t t, int64_t d, int64_t start, int64_t rows, bool first) {
    if (!first) spare[t] = d;
    const TimesTransposed times_b(bp + d * rank * n_out, rank, n_out);
    const Out grad_bd{first ? gbp + d * rank * n_out : spare_bp + t * rank * n_out, n_out};
    const Out grad_ad{first ? gap + d * rank * n_in : spare_ap + t * rank * n_in, n_in};
    float* gbias = first ? gbiasp + d * n_out : spare_biasp + t * n_out;
    for (int64_t i = start; i < start + rows; i += ROW_BLOCK) {
      const int64_t m = std::min(ROW_BLOCK, start + rows - i);
      const In g{gp + i * n_out, n_out}, xs{xp + i * n_in, n_in}, ls{lowp + i * rank, rank};
      float* gl = glp + i * rank;
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t j = 0; j < n_out; ++j) gbias[j] += g.p[r * n_out + j];
      }
      // dB_d += low^T g;  dlow = g B_d^T;  dA_d^T += dlow^T x;  dx += dlow A_d^T
      matmul_tn(m, rank, n_out, ls, g, grad_bd);
      times_b(m, g, gl);
      matmul_tn(m, rank, n_in, {gl, rank}, xs, grad_ad);
      if (has_grad_x) {
        matmul(m, rank, n_in, {gl, rank}, {ap + d * rank * n_in, n_in}, {gxp + i * n_in, n_in}, true);
      }
    }
  });
  for (int t = 0; t < max_threads; ++t) {
    if (spare[t] < 0) continue;
    grad_a_t[spare[t]].add_(spare_a_t[t]);
    grad_b[spare[t]].add_(spare_b[t]);
    grad_bias[spare[t]].add_(spare_bias[t]);
  }
  return {grad_a_t, grad_b, grad_bias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "add the adapters' term to out, per segment; returns x A_d per row");
  m.def("backward", &backward, "the adapters' gradients per segment; adds their part to grad_x");
}
