/**
 * A hand-assembled WebAssembly SIMD micro-kernel for the deterministic merge.
 *
 * Why WebAssembly: V8 does not auto-vectorize JS loops; the best register-blocked
 * JS loop measured ~3 GFLOP/s per core here, while the f64x2 kernel below runs
 * several times faster. Why hand-assembled: the project has no wasm toolchain and
 * the kernel is ~100 instructions; emitting the bytes here keeps the build plain tsc.
 *
 * Why it stays deterministic: it only uses f64x2.mul, f64x2.add, promote (exact) and
 * demote (IEEE round-to-nearest-even, like Math.fround). WebAssembly fixes these to
 * IEEE-754 semantics on every host (no FMA contraction, no flush-to-zero, no relaxed
 * SIMD), and each SIMD lane is an independent element, so every element sees exactly
 * the same sequence of roundings as the scalar definition in merge.ts. Only NaN
 * payload bits are left unspecified by WebAssembly (inputs are assumed finite).
 *
 * Exported function `tile(pa, pb, pw, R, nPanels, wStride)` computes, for one group of
 * MR output rows and `nPanels` consecutive column panels of NC = 2*NV columns each:
 *
 *   acc[r][c] = sum_{s=0}^{R-1} Bp[s][r] * Ap[s][c]      (sequential in s, float64)
 *   W[r][c]   = f32( f64(W[r][c]) + acc[r][c] )
 *
 * The module imports its memory as `env.memory` (shared, up to KERNEL_MAX_PAGES pages).
 * Memory layouts (byte pointers into that memory):
 *   pa: column panels of A, panel-major: panel q holds Ap[s][c] = A[s][q*NC + c],
 *       float64, NC values per s, so one panel is R*NC*8 bytes, panels contiguous.
 *   pb: the row group's B panel: Bp[s][r] = B[i0 + r][s], float64, MR values per s.
 *   pw: float32 W[i0][j0], rows wStride bytes apart; panel q writes columns j0+q*NC...
 */

/**
 * Rows of W per micro-tile (registers: MR*NV accumulators + NV A vectors + 1 splat <= 16).
 * 2 x 8 measured fastest here (~17 GFLOP/s on one core, vs ~13 for 4 x 4 and < 9 when
 * the tile needs more than 16 vector registers).
 */
export const KERNEL_MR = 2
/** f64x2 vectors per row of a micro-tile; the tile is KERNEL_MR x (2*KERNEL_NV) elements. */
export const KERNEL_NV = 4
/** Columns per A panel. */
export const KERNEL_NC = 2 * KERNEL_NV
/** Largest memory the kernel accepts, in 64 KiB pages (4 GiB: the whole wasm32 address space). */
export const KERNEL_MAX_PAGES = 65536

function uleb(n: number): number[] {
  const out: number[] = []
  do {
    let byte = n & 0x7f
    n >>>= 7
    if (n !== 0) byte |= 0x80
    out.push(byte)
  } while (n !== 0)
  return out
}

function sleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const byte = n & 0x7f
    n >>= 7
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte)
      return out
    }
    out.push(byte | 0x80)
  }
}

function str(s: string): number[] {
  const bytes = [...Buffer.from(s, 'utf8')]
  return [...uleb(bytes.length), ...bytes]
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body]
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()]
}

// Opcodes (WebAssembly core 2.0 + fixed-width SIMD).
const I32 = 0x7f
const V128 = 0x7b
const LOCAL_GET = 0x20
const LOCAL_SET = 0x21
const LOCAL_TEE = 0x22
const I32_CONST = 0x41
const I32_ADD = 0x6a
const I32_SUB = 0x6b
const I32_MUL = 0x6c
const I32_NE = 0x47
const LOOP = 0x03
const BR_IF = 0x0d
const END = 0x0b
const EMPTY = 0x40
const SIMD = 0xfd
const simd = (op: number): number[] => [SIMD, ...uleb(op)]
const memarg = (alignLog2: number, offset: number): number[] => [...uleb(alignLog2), ...uleb(offset)]
const V128_LOAD = (offset: number): number[] => [...simd(0x00), ...memarg(3, offset)]
const V128_LOAD64_SPLAT = (offset: number): number[] => [...simd(0x0a), ...memarg(3, offset)]
const V128_LOAD64_ZERO = (offset: number): number[] => [...simd(0x5d), ...memarg(3, offset)]
const V128_STORE64_LANE0 = (offset: number): number[] => [...simd(0x5b), ...memarg(3, offset), 0]
const V128_CONST_ZERO = [...simd(0x0c), ...new Array<number>(16).fill(0)]
const F64X2_ADD = simd(240)
const F64X2_MUL = simd(242)
const F32X4_DEMOTE_F64X2_ZERO = simd(94)
const F64X2_PROMOTE_LOW_F32X4 = simd(95)

const get = (i: number): number[] => [LOCAL_GET, ...uleb(i)]
const set = (i: number): number[] => [LOCAL_SET, ...uleb(i)]
const tee = (i: number): number[] => [LOCAL_TEE, ...uleb(i)]
const i32c = (n: number): number[] => [I32_CONST, ...sleb(n)]

/** Builds the module bytes for an MR x (2*NV) micro-tile. */
export function buildKernelWasm(MR: number = KERNEL_MR, NV: number = KERNEL_NV): Uint8Array {
  const NC = 2 * NV
  // params
  const pa = 0, pb = 1, pw = 2, R = 3, nPanels = 4, ws = 5
  // i32 locals
  const paEnd = 6, pbc = 7, panelBytes = 8, bStride = 9
  const rowPtr = 10 // MR locals: W row pointers of the current panel
  const firstV = rowPtr + MR
  const acc = (r: number, v: number): number => firstV + r * NV + v
  const aVec = (v: number): number => firstV + MR * NV + v
  const bSplat = firstV + MR * NV + NV
  const i32Locals = firstV - 6
  const v128Locals = MR * NV + NV + 1

  const body: number[] = []
  const emit = (...xs: number[][]): void => {
    for (const x of xs) body.push(...x)
  }
  // panelBytes = R * NC * 8: bytes of one A panel; bStride = MR * 8: bytes per s in Bp.
  emit(get(R), i32c(NC * 8), [I32_MUL], set(panelBytes))
  emit(i32c(MR * 8), set(bStride))
  emit([LOOP, EMPTY]) // per panel
  for (let r = 0; r < MR; r++) for (let v = 0; v < NV; v++) emit(V128_CONST_ZERO, set(acc(r, v)))
  emit(get(pb), set(pbc))
  emit(get(pa), get(panelBytes), [I32_ADD], set(paEnd))
  emit([LOOP, EMPTY]) // per s, sequential: the summation order of every element
  for (let v = 0; v < NV; v++) emit(get(pa), V128_LOAD(v * 16), set(aVec(v)))
  for (let r = 0; r < MR; r++) {
    emit(get(pbc), V128_LOAD64_SPLAT(r * 8), set(bSplat))
    for (let v = 0; v < NV; v++) {
      // acc += b * a: one float64 product rounding, one float64 sum rounding, per lane
      emit(get(acc(r, v)), get(bSplat), get(aVec(v)), F64X2_MUL, F64X2_ADD, set(acc(r, v)))
    }
  }
  emit(get(pbc), get(bStride), [I32_ADD], set(pbc))
  emit(get(pa), i32c(NC * 8), [I32_ADD], tee(pa), get(paEnd), [I32_NE], [BR_IF, 0])
  emit([END])
  // write back: W = f32(f64(W) + acc)
  emit(get(pw), set(rowPtr))
  for (let r = 1; r < MR; r++) emit(get(rowPtr + r - 1), get(ws), [I32_ADD], set(rowPtr + r))
  for (let r = 0; r < MR; r++) {
    for (let v = 0; v < NV; v++) {
      emit(get(rowPtr + r), get(rowPtr + r), V128_LOAD64_ZERO(v * 8), F64X2_PROMOTE_LOW_F32X4)
      emit(get(acc(r, v)), F64X2_ADD, F32X4_DEMOTE_F64X2_ZERO, V128_STORE64_LANE0(v * 8))
    }
  }
  emit(get(pw), i32c(NC * 4), [I32_ADD], set(pw))
  emit(get(nPanels), i32c(1), [I32_SUB], tee(nPanels), [BR_IF, 0])
  emit([END])
  emit([END])

  const locals = vec([[...uleb(i32Locals), I32], [...uleb(v128Locals), V128]])
  const func = [...locals, ...body]
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...vec(new Array<number[]>(6).fill([I32])), ...vec([])]])),
    // import env.memory: shared (flag 0x03 = shared + has max), so worker threads can all
    // instantiate the kernel over the one memory holding the packed operands and W
    ...section(2, vec([[...str('env'), ...str('memory'), 0x02, 0x03, ...uleb(1), ...uleb(KERNEL_MAX_PAGES)]])),
    ...section(3, vec([[0]])),
    ...section(7, vec([[...str('tile'), 0x00, 0]])),
    ...section(10, vec([[...uleb(func.length), ...func]])),
  ]
  return Uint8Array.from(bytes)
}
