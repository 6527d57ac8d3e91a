// The CPU kernels of avalign's TDT loss (modeling/tdt_loss.py): one pass over the token logits forward, one
// backward, and the float64 work per lattice state (arcs, alpha/beta recursions, occupancies); and the bookkeeping
// of greedy TDT decoding (modeling_fastconformer.py). Built on first use
// by modeling/tdt_kernels.py (g++ -O3 -march=native) and called through ctypes; every function is extern "C" and
// takes raw pointers.
//
// Shapes: token logits (B, T, U+1, V) with element strides (sb, st, su) and unit stride over V, float32 or
// bfloat16; per-state arrays (B, T, U+1) contiguous; label_ids (B, U+1); frames, labels (B,) = T_b, U_b.
// Only the states t < T_b, u <= U_b are read; the gradient kernel also writes zeros everywhere else.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sys/mman.h>
#include <thread>
#include <vector>

namespace {

constexpr int LANES = 16;
constexpr int MAX_DURATIONS = 32;  // tdt_kernels.MAX_KERNEL_DURATIONS
typedef float vf __attribute__((vector_size(LANES * 4)));
typedef int32_t vi __attribute__((vector_size(LANES * 4)));
typedef uint32_t vu __attribute__((vector_size(LANES * 4)));

constexpr float EXP_LOW = -86.3365f;  // log(FLT_MIN) + 1: exp never leaves the normal range (torch path: _exp_floor)
constexpr float EXP_HIGH = 88.3f;
constexpr float FLUSH = 3.2e-38f;     // gradient entries at or below this are written as 0 (_flush_level)
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

inline vf splat(float x) { return vf{} + x; }

// exp on 16 lanes: Cody-Waite range reduction and Cephes' degree-6 polynomial (~1 ulp); arguments clamped.
inline vf vexp(vf x) {
    x = x < EXP_LOW ? splat(EXP_LOW) : x;
    x = x > EXP_HIGH ? splat(EXP_HIGH) : x;
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
    vf shifted = x * 1.44269504f + magic;
    vf n = shifted - magic;
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi exponent = ((vi)shifted - (vi)magic) << 23;
    return (vf)((vi)p + exponent);
}

template <typename In> inline vf load(const In* p);
template <> inline vf load<float>(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <> inline vf load<uint16_t>(const uint16_t* p) {  // bfloat16: the top half of a float32
    uint32_t bits[LANES];
    for (int k = 0; k < LANES; ++k) bits[k] = uint32_t(p[k]) << 16;
    vf v;
    std::memcpy(&v, bits, sizeof v);
    return v;
}
template <typename In> inline float scalar(In x);
template <> inline float scalar<float>(float x) { return x; }
template <> inline float scalar<uint16_t>(uint16_t x) {
    uint32_t bits = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
// the last n < LANES values of a row, the other lanes filled with `fill`
template <typename In> inline vf load_tail(const In* p, int64_t n, float fill) {
    float buffer[LANES];
    for (int k = 0; k < LANES; ++k) buffer[k] = k < n ? scalar<In>(p[k]) : fill;
    return load<float>(buffer);
}

inline void store(float* p, vf v, int64_t n) { std::memcpy(p, &v, n * 4); }
inline void store(uint16_t* p, vf v, int64_t n) {  // round to nearest even (values are finite)
    vu bits = (vu)v;
    vu rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    for (int64_t k = 0; k < n; ++k) p[k] = uint16_t(rounded[k]);
}
inline void store_one(float* p, float x) { *p = x; }
inline void store_one(uint16_t* p, float x) { store(p, splat(x), 1); }

inline float lane_max(vf v) {
    float m = v[0];
    for (int k = 1; k < LANES; ++k) m = v[k] > m ? v[k] : m;
    return m;
}
inline float lane_sum(vf v) {
    float s = 0;
    for (int k = 0; k < LANES; ++k) s += v[k];
    return s;
}

constexpr int DLANES = 8;
typedef double vd __attribute__((vector_size(DLANES * 8)));
typedef int64_t vl __attribute__((vector_size(DLANES * 8)));

inline vd splat(double x) { return vd{} + x; }

// exp on 8 float64 lanes: Cody-Waite range reduction and a degree-13 Taylor polynomial (|r| <= ln 2 / 2, ~1 ulp);
// 0 below -708 (-inf included), arguments above 709 clamped; NaN stays NaN.
inline vd vexp(vd x) {
    const vd magic = splat(6755399441055744.0);  // 1.5 * 2^52
    vd clamped = x > 709.0 ? splat(709.0) : x;
    clamped = clamped < -708.0 ? splat(-708.0) : clamped;
    vd shifted = clamped * 1.4426950408889634 + magic;
    vd n = shifted - magic;
    vd r = clamped - n * 6.93147180369123816490e-01 - n * 1.90821492927058770002e-10;
    vd p = splat(1.0 / 6227020800.0);
    const double inverse_factorials[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                         1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                                         1.0 / 6.0, 0.5, 1.0, 1.0};
    for (double c : inverse_factorials) p = p * r + c;
    vl exponent = ((vl)shifted - (vl)magic + 1023) << 52;
    vd result = p * (vd)exponent;
    result = x < -708.0 ? vd{} : result;
    return x != x ? x : result;
}

inline double lane_sum(vd v) {
    double s = 0;
    for (int k = 0; k < DLANES; ++k) s += v[k];
    return s;
}

// exp of n values (a buffer of at least n rounded up to DLANES), written back in place
inline void exp_in_place(double* values, int64_t n) {
    for (int64_t k = 0; k < n; k += DLANES) {
        vd x;
        std::memcpy(&x, values + k, sizeof x);
        x = vexp(x);
        std::memcpy(values + k, &x, 8 * (n - k < DLANES ? n - k : DLANES));
    }
}

// log(sum(exp(terms[:n]))): -inf when n = 0 or every term is -inf; `terms` holds n rounded up to DLANES
inline double log_sum_exp(double* terms, int64_t n) {
    double high = -INFINITY;
    for (int64_t k = 0; k < n; ++k) high = terms[k] > high ? terms[k] : high;
    if (high == -INFINITY) return -INFINITY;
    for (int64_t k = n; k % DLANES; ++k) terms[k] = -INFINITY;
    vd sum = vd{};
    for (int64_t k = 0; k < n; k += DLANES) {
        vd x;
        std::memcpy(&x, terms + k, sizeof x);
        sum += vexp(x - high);
    }
    return high + std::log(lane_sum(sum));
}

constexpr int MAX_TERMS = 2 * MAX_DURATIONS + DLANES;  // arcs into or out of a state, padding included

// Run body(i) for i in [0, total) on `threads` threads, a few at a time. With OpenMP this is torch's own thread pool
// (the library links the libgomp that torch has loaded), so no thread is started or left spinning against torch's.
template <typename Body> void parallel_for(int64_t total, int64_t grain, int threads, Body body) {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, grain) num_threads(threads) if (threads > 1 && total > 1)
    for (int64_t i = 0; i < total; ++i) body(i);
#else
    std::atomic<int64_t> next{0};
    auto run = [&] {
        for (int64_t i; (i = next.fetch_add(grain)) < total;)
            for (int64_t k = i; k < i + grain && k < total; ++k) body(k);
    };
    std::vector<std::thread> pool;
    for (int k = 1; k < threads && k * grain < total; ++k) pool.emplace_back(run);
    run();
    for (auto& thread : pool) thread.join();
#endif
}

// Run body(b, t) for every frame of the batch, t < max_t.
template <typename Body> void for_all_frames(int64_t batch, int64_t max_t, int threads, Body body) {
    parallel_for(batch * max_t, 4, threads, [&](int64_t i) { body(i / max_t, i % max_t); });
}

// Run body(b, t) for every valid frame of every utterance.
template <typename Body>
void for_frames(int64_t batch, int64_t max_t, const int64_t* frames, int threads, Body body) {
    std::vector<int64_t> work;  // b * max_t + t
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t t = 0; t < frames[b]; ++t) work.push_back(b * max_t + t);
    parallel_for(work.size(), 2, threads, [&](int64_t i) { body(work[i] / max_t, work[i] % max_t); });
}

template <typename In>
void token_statistics(const In* logits, int64_t batch, int64_t max_t, int64_t max_u1, int64_t vocab, int64_t sb,
                      int64_t st, int64_t su, const int64_t* label_ids, const int64_t* frames, const int64_t* labels,
                      int64_t blank, float* log_normalizer, float* blank_logit, float* label_logit, uint8_t* finite,
                      int threads) {
    const int64_t whole = vocab / LANES * LANES;
    // sum of exp(row - shift) on 16 lanes, the tail's missing lanes zero; high: the lanes' max, nan: any NaN
    auto exp_sum = [&](const In* row, float shift, vf& high, vi& nan) {
        vf sum = vf{};
        for (int64_t v = 0; v < whole; v += LANES) {
            vf x = load<In>(row + v);
            nan |= x != x;
            high = x > high ? x : high;
            sum += vexp(x - shift);
        }
        if (whole < vocab) {
            vf x = load_tail<In>(row + whole, vocab - whole, NEG_INF), e = vexp(x - shift);
            nan |= x != x;
            high = x > high ? x : high;
            for (int k = vocab - whole; k < LANES; ++k) e[k] = 0.0f;
            sum += e;
        }
        return sum;
    };
    // One pass per row: the shift is the previous row's max (rows of one frame differ by a decoder state, so their
    // maxima are close), exact whenever the row's own max lies within SHIFT_WINDOW of it (no term overflows, and the
    // rounding of x - shift stays at that of x - max); otherwise, and on a frame's first row, a second pass from the
    // row's max.
    constexpr float SHIFT_WINDOW = 8.0f;
    for_frames(batch, max_t, frames, threads, [&](int64_t b, int64_t t) {
        float shift = NEG_INF;
        for (int64_t u = 0; u <= labels[b]; ++u) {
            const In* row = logits + b * sb + t * st + u * su;
            vf high = splat(NEG_INF);
            vi nan = vi{};
            vf sum = exp_sum(row, std::isfinite(shift) ? shift : 0.0f, high, nan);
            float m = lane_max(high);
            bool ok = std::isfinite(m);
            for (int k = 0; k < LANES; ++k) ok &= nan[k] == 0;
            if (ok && !(std::fabs(m - shift) <= SHIFT_WINDOW)) {
                sum = exp_sum(row, m, high, nan);
                shift = m;
            }
            const int64_t state = (b * max_t + t) * max_u1 + u;
            log_normalizer[state] = ok ? std::log(lane_sum(sum)) + shift : std::numeric_limits<float>::quiet_NaN();
            blank_logit[state] = scalar<In>(row[blank]);
            label_logit[state] = scalar<In>(row[label_ids[b * max_u1 + u]]);
            finite[state] = ok;
            shift = ok ? m : NEG_INF;
        }
    });
}

// grad[v] = sign * exp(logit[v] - shift) (softmax times |occupancy|), flushed at FLUSH, minus the blank and label
// arc occupancies at their ids; rows that are not significant, and states outside an utterance, get zeros.
template <typename In, typename Out>
void token_gradient(const In* logits, int64_t batch, int64_t max_t, int64_t max_u1, int64_t vocab, int64_t sb,
                    int64_t st, int64_t su, Out* grad, int64_t gb, int64_t gt, int64_t gu, const float* shift,
                    const float* blank_occupancy, const float* label_occupancy, const uint8_t* significant,
                    const uint8_t* negative, const int64_t* label_ids, const int64_t* frames, const int64_t* labels,
                    int64_t blank, int threads) {
    const int64_t whole = vocab / LANES * LANES;
    auto zero = [&](int64_t b, int64_t t, int64_t u) { std::memset(grad + b * gb + t * gt + u * gu, 0, vocab * sizeof(Out)); };
    for (int64_t b = 0; b < batch; ++b)  // frames past T_b
        for (int64_t t = frames[b]; t < max_t; ++t)
            for (int64_t u = 0; u < max_u1; ++u) zero(b, t, u);
    for_frames(batch, max_t, frames, threads, [&](int64_t b, int64_t t) {
        for (int64_t u = 0; u < max_u1; ++u) {
            const int64_t state = (b * max_t + t) * max_u1 + u;
            if (u > labels[b] || !significant[state]) {
                zero(b, t, u);
                continue;
            }
            const In* row = logits + b * sb + t * st + u * su;
            Out* out = grad + b * gb + t * gt + u * gu;
            const float sign = negative[b] ? -1.0f : 1.0f, s = shift[state];
            auto value = [&](vf x) {
                vf e = vexp(x - s);
                return e > FLUSH ? e * sign : vf{};
            };
            for (int64_t v = 0; v < whole; v += LANES) store(out + v, value(load<In>(row + v)), LANES);
            if (whole < vocab) store(out + whole, value(load_tail<In>(row + whole, vocab - whole, 0.0f)), vocab - whole);
            // the arc terms, in float32 as in the PyTorch path
            const int64_t label = label_ids[b * max_u1 + u];
            auto subtract = [&](int64_t v, float amount) {
                float current = scalar<Out>(out[v]);
                store_one(out + v, current - amount);
            };
            subtract(blank, blank_occupancy[state]);
            subtract(label, label_occupancy[state]);
        }
    });
}

template <typename Body> void for_utterances(int64_t batch, int threads, Body body) {
    parallel_for(batch, 1, threads, body);
}

}  // namespace

extern "C" {

int avalign_tdt_abi_version() { return 4; }

// Ask for transparent huge pages on the 2 MiB-aligned interior of a fresh buffer, before anything touches it: a
// gradient of 200 MB otherwise costs ~50k page faults, more time than the kernel that writes it.
void avalign_advise_huge_pages(void* buffer, int64_t bytes) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = uintptr_t(1) << 21;
    const uintptr_t start = (uintptr_t(buffer) + huge - 1) & ~(huge - 1), end = (uintptr_t(buffer) + bytes) & ~(huge - 1);
    if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#endif
}

// dtype: 0 float32, 1 bfloat16
void avalign_tdt_token_statistics(const void* logits, int dtype, int64_t batch, int64_t max_t, int64_t max_u1,
                                  int64_t vocab, int64_t sb, int64_t st, int64_t su, const int64_t* label_ids,
                                  const int64_t* frames, const int64_t* labels, int64_t blank, float* log_normalizer,
                                  float* blank_logit, float* label_logit, uint8_t* finite, int threads) {
    if (dtype == 0)
        token_statistics((const float*)logits, batch, max_t, max_u1, vocab, sb, st, su, label_ids, frames, labels,
                         blank, log_normalizer, blank_logit, label_logit, finite, threads);
    else
        token_statistics((const uint16_t*)logits, batch, max_t, max_u1, vocab, sb, st, su, label_ids, frames,
                         labels, blank, log_normalizer, blank_logit, label_logit, finite, threads);
}

// the gradient has the logits' dtype
void avalign_tdt_token_gradient(const void* logits, int dtype, int64_t batch, int64_t max_t, int64_t max_u1,
                                int64_t vocab, int64_t sb, int64_t st, int64_t su, void* grad, int64_t gb, int64_t gt,
                                int64_t gu, const float* shift, const float* blank_occupancy,
                                const float* label_occupancy, const uint8_t* significant, const uint8_t* negative,
                                const int64_t* label_ids, const int64_t* frames, const int64_t* labels, int64_t blank,
                                int threads) {
    if (dtype == 0)
        token_gradient((const float*)logits, batch, max_t, max_u1, vocab, sb, st, su, (float*)grad, gb, gt, gu, shift,
                       blank_occupancy, label_occupancy, significant, negative, label_ids, frames, labels, blank,
                       threads);
    else
        token_gradient((const uint16_t*)logits, batch, max_t, max_u1, vocab, sb, st, su, (uint16_t*)grad, gb, gt, gu,
                       shift, blank_occupancy, label_occupancy, significant, negative, label_ids, frames, labels,
                       blank, threads);
}

// The lattice's arcs from per-state statistics, float64. Inputs (B, T, U+1): log-normaliser, blank logit, label
// logit; duration logits (B, T, U+1, D). Outputs: duration log-probs and the blank and label arc log-weights
// (B, T, U+1, D): log p(blank or target_u) - sigma + log p(d_j), blank -inf at d = 0, label -inf at u = U_b (nothing
// left to emit); final (B, T, U+1): the log-weight of ending from each state (blank arcs that land exactly on T_b);
// finite (B, T, U+1): every duration logit of the state is finite. Outside an utterance: arcs and final -inf, log-probs
// 0, finite 1.
void avalign_tdt_arcs(const double* log_normalizer, const double* blank_logit, const double* label_logit,
                      const double* duration_logits, const int64_t* durations, int64_t n_durations, double sigma,
                      int64_t batch, int64_t max_t, int64_t max_u1, const int64_t* frames, const int64_t* labels,
                      double* duration_log_probs, double* blank, double* label, double* final, uint8_t* finite,
                      int threads) {
    const int64_t D = n_durations;
    // states in groups of DLANES consecutive u of one frame, each lane one state
    for_all_frames(batch, max_t, threads, [&](int64_t b, int64_t t) {
        for (int64_t u0 = 0; u0 < max_u1; u0 += DLANES) {
            const int64_t first = (b * max_t + t) * max_u1 + u0, n = std::min<int64_t>(DLANES, max_u1 - u0);
            const int64_t in_utterance = t < frames[b] ? std::min<int64_t>(n, labels[b] + 1 - u0) : 0;  // lanes
            vd logits[MAX_DURATIONS], high = splat(-HUGE_VAL);
            bool ok[DLANES];
            for (int64_t k = 0; k < DLANES; ++k) ok[k] = true;
            for (int64_t j = 0; j < D; ++j) {
                logits[j] = vd{};
                for (int64_t k = 0; k < in_utterance; ++k) {
                    logits[j][k] = duration_logits[(first + k) * D + j];
                    ok[k] &= std::isfinite(logits[j][k]);
                }
                high = logits[j] > high ? logits[j] : high;
            }
            vd sum = vd{};
            for (int64_t j = 0; j < D; ++j) sum += vexp(logits[j] - high);
            for (int64_t k = 0; k < n; ++k) {
                const int64_t state = first + k, u = u0 + k;
                final[state] = -INFINITY;
                finite[state] = k < in_utterance ? ok[k] : 1;
                const double normalizer = high[k] + std::log(sum[k]);
                const double blank_weight = blank_logit[state] - log_normalizer[state] - sigma;
                const double label_weight = label_logit[state] - log_normalizer[state] - sigma;
                for (int64_t j = 0; j < D; ++j) {
                    const double log_prob = k < in_utterance ? logits[j][k] - normalizer : 0.0;
                    duration_log_probs[state * D + j] = log_prob;
                    const bool blank_arc = k < in_utterance && durations[j] > 0;
                    const bool label_arc = k < in_utterance && u < labels[b];
                    blank[state * D + j] = blank_arc ? blank_weight + log_prob : -INFINITY;
                    label[state * D + j] = label_arc ? label_weight + log_prob : -INFINITY;
                }
            }
        }
    });
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t j = 0; j < D; ++j) {
            const int64_t start = frames[b] - durations[j];
            if (durations[j] == 0 || start < 0) continue;
            const int64_t state = (b * max_t + start) * max_u1 + labels[b];
            double terms[DLANES] = {final[state], blank[state * D + j]};
            final[state] = log_sum_exp(terms, 2);
        }
}

// The per-state gradients, float64, from the arcs, alpha, beta (B, T, U+1), the log-likelihood and the incoming
// gradient `scale` (B,). Arc occupancy: exp(alpha(source) + arc + beta(destination) - logLL) * scale, where beta of
// the end (T_b, U_b) is 0 for blank arcs; utterances with logLL = -inf get zero occupancy. Outputs (B, T, U+1): the
// softmax shift log-normaliser - log|occupancy|, the blank and label occupancies (summed over durations), whether
// |occupancy| > flush; duration_grad (B, T, U+1, D): p(d_j) * occupancy - the arcs' occupancies at d_j. Outside an
// utterance: zeros, shift +inf, not significant.
void avalign_tdt_state_gradients(const double* blank, const double* label, const double* duration_log_probs,
                                 const double* alpha, const double* beta, const double* log_likelihood,
                                 const double* scale, const double* log_normalizer, const int64_t* durations,
                                 int64_t n_durations, int64_t batch, int64_t max_t, int64_t max_u1,
                                 const int64_t* frames, const int64_t* labels, double flush, double* softmax_shift,
                                 double* blank_occupancy, double* label_occupancy, uint8_t* significant,
                                 double* duration_grad, int threads) {
    const int64_t D = n_durations;
    // states in groups of DLANES consecutive u of one frame, each lane one state
    for_all_frames(batch, max_t, threads, [&](int64_t b, int64_t t) {
        const double* be = beta + b * max_t * max_u1;
        const double total = std::isfinite(log_likelihood[b]) ? log_likelihood[b] : 0.0;
        for (int64_t u0 = 0; u0 < max_u1; u0 += DLANES) {
            const int64_t first = (b * max_t + t) * max_u1 + u0, n = std::min<int64_t>(DLANES, max_u1 - u0);
            const int64_t in_utterance = t < frames[b] ? std::min<int64_t>(n, labels[b] + 1 - u0) : 0;  // lanes
            vd source = splat(-HUGE_VAL);
            bool reached = false;
            for (int64_t k = 0; k < in_utterance; ++k) {
                source[k] = alpha[first + k] - total;
                reached |= source[k] > -INFINITY;
            }
            if (!reached) {  // no path reaches these states (e.g. outside a pruned lattice's windows): no gradient
                for (int64_t k = 0; k < n; ++k) {
                    const int64_t state = first + k;
                    for (int64_t j = 0; j < D; ++j) duration_grad[state * D + j] = 0.0;
                    blank_occupancy[state] = label_occupancy[state] = 0.0;
                    softmax_shift[state] = INFINITY;
                    significant[state] = 0;
                }
                continue;
            }
            // per duration: the blank and label arcs' occupancies and p(d_j), one state per lane
            vd blank_arcs[MAX_DURATIONS], label_arcs[MAX_DURATIONS], blank_sum = vd{}, label_sum = vd{};
            for (int64_t j = 0; j < D; ++j) {
                const int64_t s = t + durations[j];
                vd blank_to = splat(-HUGE_VAL), label_to = splat(-HUGE_VAL), blank_arc, label_arc;
                for (int64_t k = 0; k < in_utterance; ++k) {
                    const int64_t u = u0 + k;
                    if (s < frames[b]) {
                        blank_to[k] = be[s * max_u1 + u];
                        if (u < labels[b]) label_to[k] = be[s * max_u1 + u + 1];
                    } else if (s == frames[b] && u == labels[b]) {
                        blank_to[k] = 0.0;
                    }
                    blank_arc[k] = blank[(first + k) * D + j];
                    label_arc[k] = label[(first + k) * D + j];
                }
                blank_arcs[j] = vexp(blank_arc + source + blank_to) * scale[b];
                label_arcs[j] = vexp(label_arc + source + label_to) * scale[b];
                blank_sum += blank_arcs[j];
                label_sum += label_arcs[j];
            }
            const vd occupancy = blank_sum + label_sum;
            for (int64_t j = 0; j < D; ++j) {
                vd log_prob = vd{};
                for (int64_t k = 0; k < in_utterance; ++k) log_prob[k] = duration_log_probs[(first + k) * D + j];
                const vd grad = vexp(log_prob) * occupancy - (blank_arcs[j] + label_arcs[j]);
                for (int64_t k = 0; k < n; ++k) duration_grad[(first + k) * D + j] = k < in_utterance ? grad[k] : 0.0;
            }
            for (int64_t k = 0; k < n; ++k) {
                const int64_t state = first + k;
                const bool used = k < in_utterance && source[k] > -INFINITY;
                blank_occupancy[state] = used ? blank_sum[k] : 0.0;
                label_occupancy[state] = used ? label_sum[k] : 0.0;
                softmax_shift[state] = used ? log_normalizer[state] - std::log(std::fabs(occupancy[k])) : INFINITY;
                significant[state] = used && std::fabs(occupancy[k]) > flush;
            }
        }
    });
}

// A pruned lattice's states: frame t of utterance b keeps u in [row_start[b, t], row_end[b, t]) ((B, T) int64 each);
// nullptr for every state. The recursions leave the others at -inf.
inline int64_t first_row(const int64_t* row_start, int64_t b, int64_t t, int64_t max_t) {
    return row_start ? row_start[b * max_t + t] : 0;
}
inline int64_t last_row(const int64_t* row_end, int64_t b, int64_t t, int64_t max_t, const int64_t* labels) {
    return row_end ? std::min(row_end[b * max_t + t] - 1, labels[b]) : labels[b];
}

// alpha (B, T, U+1) float64: log-weight of all partial paths from (0, 0) to each state; -inf outside utterances.
// blank, label: (B, T, U+1, D) arc log-weights (-inf where an arc does not exist); durations (D,).
void avalign_tdt_log_alpha(const double* blank, const double* label, const int64_t* durations, int64_t n_durations,
                           int64_t batch, int64_t max_t, int64_t max_u1, const int64_t* frames, const int64_t* labels,
                           const int64_t* row_start, const int64_t* row_end, double* alpha, int threads) {
    for_utterances(batch, threads, [&](int64_t b) {
        double* a = alpha + b * max_t * max_u1;
        const double* bl = blank + b * max_t * max_u1 * n_durations;
        const double* la = label + b * max_t * max_u1 * n_durations;
        for (int64_t i = 0; i < max_t * max_u1; ++i) a[i] = -INFINITY;
        for (int64_t t = 0; t < frames[b]; ++t)
            for (int64_t u = first_row(row_start, b, t, max_t); u <= last_row(row_end, b, t, max_t, labels); ++u) {
                double terms[MAX_TERMS];
                int n = 0;
                if (t == 0 && u == 0) terms[n++] = 0.0;  // the start
                for (int64_t j = 0; j < n_durations; ++j) {
                    const int64_t d = durations[j], s = t - d;
                    if (s < 0) continue;
                    if (d > 0) terms[n++] = a[s * max_u1 + u] + bl[(s * max_u1 + u) * n_durations + j];
                    if (u > 0) terms[n++] = a[s * max_u1 + u - 1] + la[(s * max_u1 + u - 1) * n_durations + j];
                }
                a[t * max_u1 + u] = log_sum_exp(terms, n);
            }
    });
}

// beta (B, T, U+1) float64: log-weight of all partial paths from each state to the end; final (B, T, U+1) is the
// log-weight of ending from each state (blank arcs that land exactly on T_b).
void avalign_tdt_log_beta(const double* blank, const double* label, const double* final, const int64_t* durations,
                          int64_t n_durations, int64_t batch, int64_t max_t, int64_t max_u1, const int64_t* frames,
                          const int64_t* labels, const int64_t* row_start, const int64_t* row_end, double* beta,
                          int threads) {
    for_utterances(batch, threads, [&](int64_t b) {
        const int64_t offset = b * max_t * max_u1;
        double* be = beta + offset;
        const double* bl = blank + offset * n_durations;
        const double* la = label + offset * n_durations;
        for (int64_t i = 0; i < max_t * max_u1; ++i) be[i] = -INFINITY;
        for (int64_t t = frames[b] - 1; t >= 0; --t)
            for (int64_t u = last_row(row_end, b, t, max_t, labels); u >= first_row(row_start, b, t, max_t); --u) {
                double terms[MAX_TERMS];
                int n = 0;
                terms[n++] = final[offset + t * max_u1 + u];
                for (int64_t j = 0; j < n_durations; ++j) {
                    const int64_t d = durations[j], s = t + d;
                    if (s >= frames[b]) continue;
                    if (d > 0) terms[n++] = be[s * max_u1 + u] + bl[(t * max_u1 + u) * n_durations + j];
                    if (u < labels[b]) terms[n++] = be[s * max_u1 + u + 1] + la[(t * max_u1 + u) * n_durations + j];
                }
                be[t * max_u1 + u] = log_sum_exp(terms, n);
            }
    });
}

// ---------------------------------------------------------------------------------------------- greedy decoding
// The bookkeeping of batched label-looping greedy TDT (FastConformerForCTCTDT.tdt_greedy_decode) between the joint and
// prediction-network products that torch computes. float32 arrays contiguous: encoder (B, T', H), decoder states
// (B, H), joint input (B, H), logits (B, V + D); int64 per-row state (B,); searching, active, emit: uint8 (B,).

// The joint's B input slots for the rows still searching (S of them): each row gets B / S slots (the first B % S
// rows one more), holding its frames time_b, time_b + 1, ...: blanks skip 1-4 frames, so a row's next frames are
// often among them, and a product of B rows costs about what one of S rows does (it is bound by reading the joint's
// weights). slot_first[b]: row b's first slot; slot_count[b]: its slots (0 if not searching); slot_time[b]: the
// frame of its first slot. joint_input[slot] = relu(encoder[b, frame] + decoder[b]); unused slots keep old values.
void avalign_greedy_fill_slots(const float* encoder, const float* decoder, const int64_t* time,
                               const uint8_t* searching, const int64_t* lengths, int64_t batch, int64_t max_t,
                               int64_t hidden, int64_t* slot_first, int64_t* slot_count, int64_t* slot_time,
                               float* joint_input) {
    int64_t rows = 0, slot = 0, k = 0;
    for (int64_t b = 0; b < batch; ++b) rows += searching[b];
    for (int64_t b = 0; b < batch; ++b) {
        slot_first[b] = slot, slot_time[b] = time[b], slot_count[b] = 0;
        if (!searching[b]) continue;
        const int64_t share = batch / rows + (k++ < batch % rows);
        slot_count[b] = std::min(share, lengths[b] - time[b]);  // frames past the utterance are never read
        for (int64_t j = 0; j < slot_count[b]; ++j, ++slot) {
            const float* frame = encoder + (b * max_t + time[b] + j) * hidden;
            const float* state = decoder + b * hidden;
            float* out = joint_input + slot * hidden;
            for (int64_t h = 0; h < hidden; ++h) {
                const float x = frame[h] + state[h];
                out[h] = x > 0.0f || x != x ? x : 0.0f;  // torch.relu (NaN stays NaN)
            }
        }
    }
}

// The index of the first largest value, NaN counting as largest (torch.argmax)
static inline int64_t first_argmax(const float* values, int64_t n) {
    int64_t best = 0;
    for (int64_t k = 1; k < n; ++k) {
        const float x = values[k], m = values[best];
        if (m != m) break;
        if (x > m || x != x) best = k;
    }
    return best;
}

// After the joint on the slots: each searching row reads the logits of its current frame while a slot holds it. It
// takes the token and duration argmaxes; a blank skips max(d, 1) frames, clears symbols_at_frame and keeps the row
// searching while time < length; a label ends its search. Then fills the slots of the rows still searching and
// returns their count.
int64_t avalign_greedy_search_step(const float* logits, int64_t vocab, const int64_t* durations, int64_t n_durations,
                                   int64_t blank, const int64_t* lengths, uint8_t* searching, int64_t* token,
                                   int64_t* duration, int64_t* time, int64_t* symbols_at_frame,
                                   int64_t* joint_evaluations, const float* encoder, const float* decoder,
                                   int64_t batch, int64_t max_t, int64_t hidden, int64_t* slot_first,
                                   int64_t* slot_count, int64_t* slot_time, float* joint_input) {
    int64_t still = 0;
    for (int64_t b = 0; b < batch; ++b) {
        while (searching[b] && time[b] - slot_time[b] < slot_count[b]) {
            const float* row = logits + (slot_first[b] + time[b] - slot_time[b]) * (vocab + n_durations);
            token[b] = first_argmax(row, vocab);
            duration[b] = durations[first_argmax(row + vocab, n_durations)];
            joint_evaluations[b] += 1;
            const bool skip = token[b] == blank;
            if (skip) {
                time[b] += std::max<int64_t>(duration[b], 1);
                symbols_at_frame[b] = 0;
            }
            searching[b] = skip && time[b] < lengths[b];
        }
        still += searching[b];
    }
    avalign_greedy_fill_slots(encoder, decoder, time, searching, lengths, batch, max_t, hidden, slot_first,
                              slot_count, slot_time, joint_input);
    return still;
}

// After the search: emit = active, a label found, time < length; record (4, B) = emitted, token, time, duration.
// A label of duration 0 stays on its frame, at most max_symbols times in a row; time advances past each label;
// active = emit and time < length. Returns the number of rows that emitted.
int64_t avalign_greedy_emit_step(const int64_t* token, const int64_t* duration, int64_t* time,
                                 int64_t* symbols_at_frame, const int64_t* lengths, uint8_t* active, uint8_t* emit,
                                 int64_t* record, int64_t batch, int64_t blank, int64_t max_symbols) {
    int64_t emitted = 0;
    for (int64_t b = 0; b < batch; ++b) {
        emit[b] = active[b] && token[b] != blank && time[b] < lengths[b];
        record[b] = emit[b], record[batch + b] = token[b], record[2 * batch + b] = time[b];
        record[3 * batch + b] = duration[b];
        symbols_at_frame[b] = emit[b] && duration[b] == 0 ? symbols_at_frame[b] + 1 : 0;
        const bool force = symbols_at_frame[b] >= max_symbols;
        if (emit[b]) time[b] += duration[b] + force;
        if (force) symbols_at_frame[b] = 0;
        active[b] = emit[b] && time[b] < lengths[b];
        emitted += emit[b];
    }
    return emitted;
}

}  // extern "C"
