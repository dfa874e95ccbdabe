/**
 * Small deterministic float64 linear algebra for FlexLoRA: Householder QR and a one-sided
 * Jacobi SVD. Only +, -, *, / and Math.sqrt (all correctly rounded IEEE operations) in a
 * fixed order, so every machine gets the same bits.
 *
 * Matrices are column-major arrays of columns (Float64Array per column) unless noted:
 * the algorithms work on whole columns, which keeps the inner loops contiguous.
 */

/** Euclidean norm of x[from..], scaled by max |x_i| so it neither overflows nor underflows. */
function columnNorm(x: Float64Array, from: number): number {
  let scale = 0
  for (let i = from; i < x.length; i++) {
    const v = Math.abs(x[i])
    if (v > scale) scale = v
  }
  if (scale === 0) return 0
  let ss = 0
  for (let i = from; i < x.length; i++) {
    const v = x[i] / scale
    ss += v * v
  }
  return scale * Math.sqrt(ss)
}

function dot(x: Float64Array, y: Float64Array): number {
  let s = 0
  for (let i = 0; i < x.length; i++) s += x[i] * y[i]
  return s
}

export interface ThinQr {
  /** k = min(m, n) orthonormal columns of length m. */
  readonly q: Float64Array[]
  /** k x n upper-triangular R, row-major. */
  readonly r: Float64Array
  readonly k: number
}

/**
 * Thin QR of the m x n matrix given by `cols` (n columns of length m): X = Q R.
 * Householder reflections H_j = I - tau_j v_j v_j^T with v_j = x - alpha e_j and
 * alpha = -sign(x_j) ||x||, tau_j = 2 / (v_j^T v_j); Q = H_0 H_1 ... H_{k-1} [I_k; 0].
 * Zero columns get the identity reflector (R row j is then 0 there).
 */
export function householderQr(cols: readonly Float64Array[], m: number): ThinQr {
  const n = cols.length
  const k = Math.min(m, n)
  const x = cols.map((c) => Float64Array.from(c))
  const vs: (Float64Array | undefined)[] = []
  const taus: number[] = []
  for (let j = 0; j < k; j++) {
    const cj = x[j]
    const norm = columnNorm(cj, j)
    if (norm === 0) {
      vs.push(undefined)
      taus.push(0)
      continue
    }
    const alpha = cj[j] >= 0 ? -norm : norm
    const v = cj.slice(j)
    v[0] -= alpha
    const vv = dot(v, v)
    const tau = 2 / vv
    vs.push(v)
    taus.push(tau)
    for (let c = j; c < n; c++) {
      const col = x[c].subarray(j)
      let d = 0
      for (let i = 0; i < v.length; i++) d += v[i] * col[i]
      const f = tau * d
      for (let i = 0; i < v.length; i++) col[i] -= f * v[i]
    }
    cj[j] = alpha
    for (let i = j + 1; i < m; i++) cj[i] = 0
  }
  const r = new Float64Array(k * n)
  for (let c = 0; c < n; c++) for (let j = 0; j <= Math.min(c, k - 1); j++) r[j * n + c] = x[c][j]
  const q: Float64Array[] = []
  for (let c = 0; c < k; c++) {
    const e = new Float64Array(m)
    e[c] = 1
    // H_j with j > c acts on rows >= j, where e_c is still zero: start at j = c
    for (let j = Math.min(c, k - 1); j >= 0; j--) {
      const v = vs[j]
      if (v === undefined) continue
      const ej = e.subarray(j)
      let d = 0
      for (let i = 0; i < v.length; i++) d += v[i] * ej[i]
      const f = taus[j] * d
      for (let i = 0; i < v.length; i++) ej[i] -= f * v[i]
    }
    q.push(e)
  }
  return { q, r, k }
}

export interface Svd {
  /** Singular values, descending. */
  readonly s: Float64Array
  /** Left singular vectors (columns, length m), aligned with s; may be zero where s is 0. */
  readonly u: Float64Array[]
  /** Right singular vectors (columns, length n), aligned with s; may be zero where s is 0. */
  readonly v: Float64Array[]
}

const JACOBI_TOL = 2 ** -52
const JACOBI_MAX_SWEEPS = 60

export interface JacobiOptions {
  /**
   * Never transpose a wide matrix, so the right vectors always come from the rotation
   * matrix and stay orthonormal even for zero singular values (FlexLoRA's A' rows must not
   * be dead). Costs an n x n V instead of m x m when n > m.
   */
  readonly keepRightOrthonormal?: boolean
}

/**
 * SVD of the m x n matrix `a` (row-major) by one-sided Jacobi (Hestenes): rotate pairs of
 * columns of G = A (or A^T when n > m) until all are orthogonal, G V = U diag(s).
 * Per pair (p, q): alpha = g_p.g_p, beta = g_q.g_q, gamma = g_p.g_q; skipped when
 * |gamma| <= tol sqrt(alpha beta); else zeta = (beta - alpha) / (2 gamma),
 * t = sign(zeta) / (|zeta| + sqrt(1 + zeta^2)), c = 1 / sqrt(1 + t^2), s = c t,
 * g_p <- c g_p - s g_q, g_q <- s g_p + c g_q (same for V). Cyclic order, fixed tolerance
 * and sweep limit: deterministic. Returns min(m, n) triplets sorted by s descending
 * (ties by index), each sign-normalized so u's largest-magnitude entry is positive.
 */
export function jacobiSvd(a: Float64Array, m: number, n: number, options: JacobiOptions = {}): Svd {
  const transpose = n > m && options.keepRightOrthonormal !== true
  const rows = transpose ? n : m
  const cols = transpose ? m : n
  const g: Float64Array[] = []
  for (let c = 0; c < cols; c++) {
    const col = new Float64Array(rows)
    for (let i = 0; i < rows; i++) col[i] = transpose ? a[c * n + i] : a[i * n + c]
    g.push(col)
  }
  const v: Float64Array[] = []
  for (let c = 0; c < cols; c++) {
    const e = new Float64Array(cols)
    e[c] = 1
    v.push(e)
  }
  const rotate = (x: Float64Array, y: Float64Array, c: number, s: number): void => {
    for (let i = 0; i < x.length; i++) {
      const xi = x[i]
      const yi = y[i]
      x[i] = c * xi - s * yi
      y[i] = s * xi + c * yi
    }
  }
  const norms = new Float64Array(cols)
  for (let sweep = 0; sweep < JACOBI_MAX_SWEEPS; sweep++) {
    let rotated = false
    // squared column norms: recomputed each sweep, updated after each rotation by
    // alpha' = alpha - t gamma, beta' = beta + t gamma (saves two of three dot products)
    for (let c = 0; c < cols; c++) norms[c] = dot(g[c], g[c])
    for (let p = 0; p < cols - 1; p++) {
      for (let q = p + 1; q < cols; q++) {
        const alpha = norms[p]
        const beta = norms[q]
        const gamma = dot(g[p], g[q])
        if (gamma === 0 || alpha === 0 || beta === 0 || Math.abs(gamma) <= JACOBI_TOL * Math.sqrt(alpha * beta)) continue
        rotated = true
        const zeta = (beta - alpha) / (2 * gamma)
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta))
        const c = 1 / Math.sqrt(1 + t * t)
        const s = c * t
        rotate(g[p], g[q], c, s)
        rotate(v[p], v[q], c, s)
        norms[p] = alpha - t * gamma
        norms[q] = beta + t * gamma
      }
    }
    if (!rotated) break
  }
  const sv = g.map((col) => columnNorm(col, 0))
  // At most min(rows, cols) triplets; with a wide G the surplus columns have converged to 0.
  const order = sv
    .map((_, i) => i)
    .sort((x, y) => (sv[y] !== sv[x] ? sv[y] - sv[x] : x - y))
    .slice(0, Math.min(rows, cols))
  const s = new Float64Array(order.length)
  const us: Float64Array[] = []
  const vs: Float64Array[] = []
  order.forEach((idx, rank) => {
    const sigma = sv[idx]
    s[rank] = sigma
    const u = new Float64Array(rows)
    if (sigma > 0) for (let i = 0; i < rows; i++) u[i] = g[idx][i] / sigma
    const w = Float64Array.from(v[idx])
    // Sign convention: the first largest-magnitude entry of u is positive (of w if u = 0).
    const ref = sigma > 0 ? u : w
    let best = 0
    for (let i = 1; i < ref.length; i++) if (Math.abs(ref[i]) > Math.abs(ref[best])) best = i
    if (ref[best] < 0) {
      for (let i = 0; i < u.length; i++) u[i] = -u[i]
      for (let i = 0; i < w.length; i++) w[i] = -w[i]
    }
    us.push(u)
    vs.push(w)
  })
  // G = A V = U S  (A^T V = U S when transposed, so A = V S U^T: swap the roles)
  return transpose ? { s, u: vs, v: us } : { s, u: us, v: vs }
}
