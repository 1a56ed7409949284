"""CPU primitives for the compiled kernels, written as LLVM IR inside numba.

`lut16(codes, at, npairs, lut, out, thr)` scores one block of 32 items of
4-bit product-quantised codes against a query's 8-bit lookup tables: the
shuffle-based table lookup of FAISS fast-scan and ScaNN, 32 lookups per
instruction (AVX2 `vpshufb`), or 64 where the CPU has AVX-512BW. Where it
lacks AVX2, or is not x86, a plain loop computes the same numbers. `ctz32`
counts trailing zero bits, `prefetch` hints that an array element will be
read soon, and `half_to_float` widens a half-precision number held as
uint16 bits.

Block layout (see `irli.index.codes`): for sub-quantiser pair p, 32 bytes at
`at + 32 p`; byte t < 16 holds sub-quantiser 2p's code of item t (low nibble)
and of item t + 16 (high nibble), byte 16 + t the same for sub-quantiser
2p + 1. The tables mirror it: `lut[32 p + c]` is the 8-bit score of code c
for sub-quantiser 2p, `lut[32 p + 16 + c]` for 2p + 1.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def _host_features() -> set[str]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return set()
    try:
        import llvmlite.binding as llvm

        return {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")}
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return set()


HAVE_AVX2 = "avx2" in _host_features()
HAVE_AVX512 = HAVE_AVX2 and "avx512bw" in _host_features()
#: 8-bit dot products in one instruction (vpdpbusd): where routing through 8-bit weights pays
HAVE_VNNI = HAVE_AVX512 and "avx512vnni" in _host_features()

_I16x32 = ir.VectorType(ir.IntType(16), 32)
_I16x16 = ir.VectorType(ir.IntType(16), 16)


def _const_vec(ty, values):
    return ir.Constant(ty, list(values))


def _element_ptr(context, builder, arrty, arr, index):
    """Pointer to arr[index] (a 1-D C array) as i8*."""
    a = context.make_array(arrty)(context, builder, arr)
    p = builder.gep(a.data, [index])
    return builder.bitcast(p, ir.IntType(8).as_pointer())


def _lut16_codegen(wide):
    """Code of lut16 with 256-bit vectors (AVX2), or with 512-bit ones
    (AVX-512BW: two sub-quantiser pairs per step, folded into the 256-bit
    sums at the end; an odd last pair takes one 256-bit step)."""

    def codegen(context, builder, signature, args):
        codes_v, at_v, np_v, lut_v, out_v, thr_v = args
        cp = _element_ptr(context, builder, signature.args[0], codes_v, at_v)
        lp = _element_ptr(context, builder, signature.args[3], lut_v, ir.Constant(ir.IntType(64), 0))
        op = _element_ptr(context, builder, signature.args[4], out_v, ir.Constant(ir.IntType(64), 0))
        i32 = ir.IntType(32)
        # The looked-up bytes are added as 16-bit words (byte 2i + 256 byte 2i+1) into one
        # accumulator and, shifted down by 8, into another (the odd bytes' sums): no widening per
        # pair. The even bytes' sums are recovered at the end as word - 256 odd, modulo 2^16.

        def steps(vbytes, count, stride, accs):
            ty8 = ir.VectorType(ir.IntType(8), vbytes)
            ty16 = ir.VectorType(ir.IntType(16), vbytes // 2)
            name = "llvm.x86.avx512.pshuf.b.512" if vbytes == 64 else "llvm.x86.avx2.pshuf.b"
            pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty8, [ty8, ty8]), name)
            low4 = _const_vec(ty8, [15] * vbytes)
            four = _const_vec(ty16, [4] * (vbytes // 2))
            eight = _const_vec(ty16, [8] * (vbytes // 2))
            with cgutils.for_range(builder, count) as loop:
                off = builder.add(builder.mul(loop.index, ir.Constant(loop.index.type, stride)), base_off)
                c = builder.load(builder.bitcast(builder.gep(cp, [off]), ty8.as_pointer()), align=1)
                t = builder.load(builder.bitcast(builder.gep(lp, [off]), ty8.as_pointer()), align=1)
                hi_idx = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(c, ty16), four), ty8), low4)
                for k, idx in ((0, builder.and_(c, low4)), (2, hi_idx)):
                    w = builder.bitcast(builder.call(pshufb, [t, idx]), ty16)
                    builder.store(builder.add(builder.load(accs[k]), w), accs[k])
                    builder.store(builder.add(builder.load(accs[k + 1]), builder.lshr(w, eight)), accs[k + 1])

        i64 = np_v.type
        base_off = ir.Constant(i64, 0)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_I16x16, None)) for _ in range(4)]
        if wide:  # lo words, lo odd, hi words, hi odd; then the same 256-bit sums as AVX2's
            wide_accs = [cgutils.alloca_once_value(builder, ir.Constant(_I16x32, None)) for _ in range(4)]
            steps(64, builder.lshr(np_v, ir.Constant(i64, 1)), 64, wide_accs)
            lo16 = _const_vec(ir.VectorType(i32, 16), range(16))
            hi16 = _const_vec(ir.VectorType(i32, 16), range(16, 32))
            for a, wa in zip(accs, wide_accs):
                v = builder.load(wa)
                builder.store(builder.add(builder.shuffle_vector(v, v, lo16), builder.shuffle_vector(v, v, hi16)), a)
            base_off = builder.mul(builder.lshr(np_v, ir.Constant(i64, 1)), ir.Constant(i64, 64))
            steps(32, builder.and_(np_v, ir.Constant(i64, 1)), 32, accs)
        else:
            steps(32, np_v, 32, accs)
        eight = _const_vec(_I16x16, [8] * 16)
        low8 = _const_vec(ir.VectorType(i32, 8), range(8))
        high8 = _const_vec(ir.VectorType(i32, 8), range(8, 16))
        weave = _const_vec(ir.VectorType(i32, 16), [j // 2 + 8 * (j % 2) for j in range(16)])
        halves = []
        for k in (0, 2):  # words 0-7 hold sub-quantiser 2p, 8-15 sub-quantiser 2p + 1: add the two
            odd = builder.load(accs[k + 1])
            even = builder.sub(builder.load(accs[k]), builder.shl(odd, eight))
            e = builder.add(builder.shuffle_vector(even, even, low8), builder.shuffle_vector(even, even, high8))
            o = builder.add(builder.shuffle_vector(odd, odd, low8), builder.shuffle_vector(odd, odd, high8))
            halves.append(builder.shuffle_vector(e, o, weave))  # items in order: even, odd, even, ...
        s = builder.shuffle_vector(halves[0], halves[1], _const_vec(ir.VectorType(i32, 32), range(32)))
        builder.store(s, builder.bitcast(op, _I16x32.as_pointer()), align=1)
        t16 = builder.trunc(thr_v, ir.IntType(16))
        tv = builder.insert_element(ir.Constant(_I16x32, None), t16, ir.Constant(i32, 0))
        tv = builder.shuffle_vector(tv, tv, _const_vec(ir.VectorType(i32, 32), [0] * 32))
        mask = builder.icmp_unsigned(">", s, tv)
        return builder.bitcast(mask, i32)

    return codegen


@intrinsic
def lut16_avx2(typingctx, codes, at, npairs, lut, out, thr):
    return types.uint32(codes, at, npairs, lut, out, thr), _lut16_codegen(False)


@intrinsic
def lut16_avx512(typingctx, codes, at, npairs, lut, out, thr):
    return types.uint32(codes, at, npairs, lut, out, thr), _lut16_codegen(True)


@numba.njit(inline="always")
def lut16_scalar(codes, at, npairs, lut, out, thr):
    mask = np.uint32(0)
    for t in range(32):
        lane = t % 16
        shift = 4 * (t // 16)
        s = 0
        for p in range(npairs):
            s += lut[32 * p + ((codes[at + 32 * p + lane] >> shift) & 15)]
            s += lut[32 * p + 16 + ((codes[at + 32 * p + 16 + lane] >> shift) & 15)]
        out[t] = s
        if s > (thr & 0xFFFF):
            mask |= np.uint32(1) << np.uint32(t)
    return mask


lut16 = lut16_avx512 if HAVE_AVX512 else lut16_avx2 if HAVE_AVX2 else lut16_scalar
lut16.__doc__ = """lut16(codes uint8 (·,), at int, npairs int, lut uint8 (32 npairs,),
out uint16 (32,), thr int in [0, 65535]) -> uint32: the 32 items' summed
table scores into `out`, and the bitmask of the items whose score exceeds
`thr` (bit t for item t)."""


_F32x16 = ir.VectorType(ir.FloatType(), 16)


def _fma_codegen(rows, vecs, half=False):
    """Code of the fused multiply-add tiles: rows x vecs accumulators of 16
    float32 lanes (rows of x by 16-column slices of w), kept in registers
    over the whole inner dimension: independent chains, so the adds'
    latency overlaps. With `half`, w holds half-precision bits (uint16),
    widened as they are read."""

    def codegen(context, builder, signature, args):
        x_v, x0, xstride, nj, w_v, woff, wstride, b_v, boff, out_v, o0, ostride, n = args
        ty = signature.args

        def data(k, v):
            return context.make_array(ty[k])(context, builder, v).data

        xp, wp, bp, op = data(0, x_v), data(4, w_v), data(7, b_v), data(9, out_v)
        i64 = x0.type
        if HAVE_AVX512:  # the explicit 512-bit instruction: LLVM would otherwise split it in two 256-bit ones
            fma512 = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_F32x16, [_F32x16] * 3 + [ir.IntType(32)]),
                "llvm.x86.avx512.vfmadd.ps.512")

            def fma_call(a, b, c):
                return builder.call(fma512, [a, b, c, ir.Constant(ir.IntType(32), 4)])  # 4: current rounding
        else:
            fma16 = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_F32x16, [_F32x16] * 3), "llvm.fma.v16f32")

            def fma_call(a, b, c):
                return builder.call(fma16, [a, b, c])

        last = builder.sub(n, ir.Constant(n.type, 1))
        xrows = []  # row t reads row min(t, n - 1)
        for t in range(rows):
            tt = ir.Constant(i64, t)
            r = builder.select(builder.icmp_signed("<", tt, last), tt, last)
            xrows.append(builder.gep(xp, [builder.add(x0, builder.mul(r, xstride))]))
        wbase = builder.gep(wp, [woff])
        biases = [builder.load(builder.bitcast(builder.gep(bp, [builder.add(boff, ir.Constant(i64, 16 * v))]),
                                               _F32x16.as_pointer()), align=4) for v in range(vecs)]
        accs = [[cgutils.alloca_once_value(builder, biases[v]) for v in range(vecs)] for _ in range(rows)]
        zeros = _const_vec(ir.VectorType(ir.IntType(32), 16), [0] * 16)
        with cgutils.for_range(builder, nj) as loop:
            j = loop.index
            wj = builder.gep(wbase, [builder.mul(j, wstride)])
            wvs = []
            for v in range(vecs):
                wv = builder.gep(wj, [ir.Constant(i64, 16 * v)])
                if half:
                    bits = builder.load(builder.bitcast(wv, _I16x16.as_pointer()), align=2)
                    wvs.append(builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), 16)), _F32x16))
                else:
                    wvs.append(builder.load(builder.bitcast(wv, _F32x16.as_pointer()), align=4))
            for row_accs, xr in zip(accs, xrows):
                xs = builder.load(builder.gep(xr, [j]))
                xv = builder.insert_element(ir.Constant(_F32x16, None), xs, ir.Constant(ir.IntType(32), 0))
                xv = builder.shuffle_vector(xv, xv, zeros)
                for acc, wv in zip(row_accs, wvs):
                    builder.store(fma_call(xv, wv, builder.load(acc)), acc)
        for t, row_accs in enumerate(accs):
            row0 = builder.add(o0, builder.mul(ir.Constant(i64, t), ostride))
            ptrs = [builder.bitcast(builder.gep(op, [builder.add(row0, ir.Constant(i64, 16 * v))]),
                                    _F32x16.as_pointer()) for v in range(vecs)]
            if t == 0:
                for acc, ptr in zip(row_accs, ptrs):
                    builder.store(builder.load(acc), ptr, align=4)
            else:
                with cgutils.if_likely(builder, builder.icmp_signed(">", n, ir.Constant(n.type, t))):
                    for acc, ptr in zip(row_accs, ptrs):
                        builder.store(builder.load(acc), ptr, align=4)
        return context.get_dummy_value()

    return codegen


#: rows of one fma16x8 tile
FMA_ROWS = 8


def _c_arrays(*arrs):
    """Whether every argument is a C-contiguous array (the tiles read them flat)."""
    return all(isinstance(a, types.Array) and a.layout == "C" for a in arrs)


def _fma_intrinsic(rows, vecs):
    def typer(typingctx, x, x0, xstride, nj, w, woff, wstride, b, boff, out, o0, ostride, n):
        if not _c_arrays(x, w, b, out) or w.dtype not in (types.float32, types.uint16):
            return None
        sig = types.void(x, x0, xstride, nj, w, woff, wstride, b, boff, out, o0, ostride, n)
        return sig, _fma_codegen(rows, vecs, half=w.dtype == types.uint16)

    return intrinsic(typer)


fma16x8 = _fma_intrinsic(FMA_ROWS, 1)
fma16x8.__doc__ = """fma16x8(x, x0, xstride, nj, w, woff, wstride, b, boff, out, o0, ostride, n):
for rows t < n (1 to 8) and lanes c < 16, float32 C arrays read flat (w
float32, or uint16 holding half-precision bits),
out[o0 + t ostride + c] = b[boff + c]
    + sum over j < nj of x[x0 + t xstride + j] * w[woff + j wstride + c],
each sum in order of j, one fused multiply-add per step, so a row gets the
same numbers alone and in any group (rows past n repeat row n - 1 and are
not stored)."""
fma64x1 = _fma_intrinsic(1, 4)
fma64x1.__doc__ = "fma16x8 for one row (n = 1) and 64 lanes (four 16-lane sums side by side)."
fma16x1 = _fma_intrinsic(1, 1)
fma16x1.__doc__ = "fma16x8 for one row (n = 1)."


_I32x16 = ir.VectorType(ir.IntType(32), 16)


def _dot8_codegen(rows, vecs, vnni):
    """Code of the 8-bit tiles: rows x vecs accumulators of 16 int32 lanes,
    each step adding, per lane, the 4 products of 4 unsigned bytes of a row
    of x (broadcast) by the lane's 4 signed bytes of w (one vpdpbusd with
    VNNI, else the same integer sums in plain vector code); at the end each
    sum is scaled to float32 and the bias added, in registers."""

    def codegen(context, builder, signature, args):
        x_v, x0, xstride, ng, w_v, woff, wstride, sc_v, b_v, boff, xs_v, out_v, o0, ostride, n = args
        ty = signature.args
        i8p = ir.IntType(8).as_pointer()

        def data(k, v):
            return context.make_array(ty[k])(context, builder, v).data

        xp = builder.bitcast(data(0, x_v), i8p)
        wp = builder.bitcast(data(4, w_v), i8p)
        scp, bp, xsp, op = data(7, sc_v), data(8, b_v), data(10, xs_v), data(11, out_v)
        i64 = x0.type
        if vnni:
            dp = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_I32x16, [_I32x16] * 3), "llvm.x86.avx512.vpdpbusd.512")

            def dot_call(acc, a, b):
                return builder.call(dp, [acc, a, b])
        else:
            i8x64 = ir.VectorType(ir.IntType(8), 64)
            i32x64 = ir.VectorType(ir.IntType(32), 64)

            def dot_call(acc, a, b):
                prod = builder.mul(builder.zext(builder.bitcast(a, i8x64), i32x64),
                                   builder.sext(builder.bitcast(b, i8x64), i32x64))
                for k in range(4):
                    pick = _const_vec(ir.VectorType(ir.IntType(32), 16), [4 * t + k for t in range(16)])
                    acc = builder.add(acc, builder.shuffle_vector(prod, prod, pick))
                return acc

        last = builder.sub(n, ir.Constant(n.type, 1))
        xrows, rowsel = [], []  # row t reads row min(t, n - 1)
        for t in range(rows):
            tt = ir.Constant(i64, t)
            r = builder.select(builder.icmp_signed("<", tt, last), tt, last)
            rowsel.append(r)
            xrows.append(builder.gep(xp, [builder.add(x0, builder.mul(r, xstride))]))
        wbase = builder.gep(wp, [woff])
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(_I32x16, None)) for _ in range(vecs)]
                for _ in range(rows)]
        zeros = _const_vec(_I32x16, [0] * 16)
        with cgutils.for_range(builder, ng) as loop:
            j = loop.index
            wj = builder.gep(wbase, [builder.mul(j, wstride)])
            wvs = [builder.load(builder.bitcast(builder.gep(wj, [ir.Constant(i64, 64 * v)]), _I32x16.as_pointer()),
                                align=1) for v in range(vecs)]
            for row_accs, xr in zip(accs, xrows):
                four = builder.load(builder.bitcast(builder.gep(xr, [builder.mul(j, ir.Constant(i64, 4))]),
                                                    ir.IntType(32).as_pointer()), align=1)
                xv = builder.insert_element(ir.Constant(_I32x16, None), four, ir.Constant(ir.IntType(32), 0))
                xv = builder.shuffle_vector(xv, xv, zeros)
                for acc, wv in zip(row_accs, wvs):
                    builder.store(dot_call(builder.load(acc), xv, wv), acc)

        def vec_at(p, off):
            return builder.load(builder.bitcast(builder.gep(p, [off]), _F32x16.as_pointer()), align=4)

        scs = [vec_at(scp, builder.add(boff, ir.Constant(i64, 16 * v))) for v in range(vecs)]
        biases = [vec_at(bp, builder.add(boff, ir.Constant(i64, 16 * v))) for v in range(vecs)]
        for t, row_accs in enumerate(accs):
            xs = builder.load(builder.gep(xsp, [rowsel[t]]))
            xsv = builder.insert_element(ir.Constant(_F32x16, None), xs, ir.Constant(ir.IntType(32), 0))
            xsv = builder.shuffle_vector(xsv, xsv, zeros)
            row0 = builder.add(o0, builder.mul(ir.Constant(i64, t), ostride))
            ptrs = [builder.bitcast(builder.gep(op, [builder.add(row0, ir.Constant(i64, 16 * v))]),
                                    _F32x16.as_pointer()) for v in range(vecs)]
            vals = [builder.fadd(bias, builder.fmul(builder.fmul(xsv, sc), builder.sitofp(builder.load(acc), _F32x16)))
                    for acc, sc, bias in zip(row_accs, scs, biases)]
            if t == 0:
                for v, ptr in zip(vals, ptrs):
                    builder.store(v, ptr, align=4)
            else:
                with cgutils.if_likely(builder, builder.icmp_signed(">", n, ir.Constant(n.type, t))):
                    for v, ptr in zip(vals, ptrs):
                        builder.store(v, ptr, align=4)
        return context.get_dummy_value()

    return codegen


def _dot8_intrinsic(rows, vecs, vnni):
    def typer(typingctx, x, x0, xstride, ng, w, woff, wstride, sc, b, boff, xs, out, o0, ostride, n):
        if (not _c_arrays(x, w, sc, b, xs, out) or x.dtype != types.uint8 or w.dtype != types.int8
                or not sc.dtype == b.dtype == xs.dtype == out.dtype == types.float32):
            return None
        sig = types.void(x, x0, xstride, ng, w, woff, wstride, sc, b, boff, xs, out, o0, ostride, n)
        return sig, _dot8_codegen(rows, vecs, vnni)

    return intrinsic(typer)


dot8x8 = _dot8_intrinsic(FMA_ROWS, 1, HAVE_VNNI)
dot8x8.__doc__ = """dot8x8(x, x0, xstride, ng, w, woff, wstride, sc, b, boff, xs, out, o0, ostride, n):
for rows t < n (1 to 8) and lanes c < 16, x uint8, w int8 and sc, b, xs,
out float32 C arrays read flat (offsets and strides in elements),
out[o0 + t ostride + c] = b[boff + c] + (xs[t] sc[boff + c]) s,
s = sum over g < ng, u < 4 of x[x0 + t xstride + 4 g + u] w[woff + g wstride + 4 c + u],
an exact integer sum (vpdpbusd where the CPU has AVX-512 VNNI), so a row
gets the same numbers alone and in any group (rows past n repeat row
n - 1 and are not stored)."""
dot8x64 = _dot8_intrinsic(1, 4, HAVE_VNNI)
dot8x64.__doc__ = "dot8x8 for one row (n = 1) and 64 lanes (four 16-lane sums side by side)."
dot8x8_plain = _dot8_intrinsic(FMA_ROWS, 1, False)
dot8x8_plain.__doc__ = "dot8x8 without VNNI instructions (the same numbers; for tests)."


def as_float(v):
    """A weight as float32: half-precision bits (uint16) widened, float32 as is."""
    raise NotImplementedError  # pragma: no cover - compiled only (see the overload)


@overload(as_float, inline="always")
def _as_float(v):
    if v == types.uint16:
        return lambda v: half_to_float(v)
    return lambda v: v


def _extreme16_codegen(op):
    """Code of max16 (op ">") or min16 (op "<")."""

    def codegen(context, builder, signature, args):
        a_v, lo_v, n_v = args
        p = builder.gep(context.make_array(signature.args[0])(context, builder, a_v).data, [lo_v])
        vp = builder.bitcast(p, _F32x16.as_pointer())
        acc = cgutils.alloca_once_value(builder, builder.load(vp, align=4))
        with cgutils.for_range(builder, builder.sub(n_v, ir.Constant(n_v.type, 1))) as loop:
            v = builder.load(builder.gep(vp, [builder.add(loop.index, ir.Constant(n_v.type, 1))]), align=4)
            a = builder.load(acc)
            builder.store(builder.select(builder.fcmp_ordered(op, v, a), v, a), acc)
        v = builder.load(acc)
        width = 16
        i32 = ir.IntType(32)
        while width > 1:  # fold halves: lane t against lane t + width / 2
            width //= 2
            hi = builder.shuffle_vector(v, v, _const_vec(ir.VectorType(i32, 16), [t + width if t < width else t
                                                                                   for t in range(16)]))
            v = builder.select(builder.fcmp_ordered(op, hi, v), hi, v)
        return builder.extract_element(v, ir.Constant(i32, 0))

    return codegen


@intrinsic
def max16(typingctx, arr, lo, count):
    """The largest of arr[lo : lo + 16 count] (a C float32 array, count >=
    1), read 16 at a time (LLVM leaves the plain loop's max scalar)."""
    if not (_c_arrays(arr) and arr.dtype == types.float32):
        return None
    return types.float32(arr, lo, count), _extreme16_codegen(">")


@intrinsic
def min16(typingctx, arr, lo, count):
    """The smallest of arr[lo : lo + 16 count], as max16."""
    if not (_c_arrays(arr) and arr.dtype == types.float32):
        return None
    return types.float32(arr, lo, count), _extreme16_codegen("<")


@intrinsic
def ge16(typingctx, arr, lo, thr):
    """uint32 mask of the lanes t < 16 with arr[lo + t] >= thr (a C
    float32 array), compared 16 at a time."""
    if not (_c_arrays(arr) and arr.dtype == types.float32):
        return None
    sig = types.uint32(arr, lo, types.float32)

    def codegen(context, builder, signature, args):
        a_v, lo_v, t_v = args
        p = builder.gep(context.make_array(signature.args[0])(context, builder, a_v).data, [lo_v])
        v = builder.load(builder.bitcast(p, _F32x16.as_pointer()), align=4)
        tv = builder.insert_element(ir.Constant(_F32x16, None), t_v, ir.Constant(ir.IntType(32), 0))
        tv = builder.shuffle_vector(tv, tv, _const_vec(ir.VectorType(ir.IntType(32), 16), [0] * 16))
        bits = builder.bitcast(builder.fcmp_ordered(">=", v, tv), ir.IntType(16))
        return builder.zext(bits, ir.IntType(32))

    return sig, codegen


@intrinsic
def popc32(typingctx, x):
    """Set bits of a uint32 (one popcnt)."""
    sig = types.uint32(types.uint32)

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [ir.IntType(32)]), "llvm.ctpop.i32")
        return builder.call(fn, [args[0]])

    return sig, codegen


@intrinsic
def ctz32(typingctx, x):
    """Trailing zero bits of a non-zero uint32."""
    sig = types.uint32(types.uint32)

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [ir.IntType(32), ir.IntType(1)]), "llvm.cttz.i32")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint that arr.ravel()[index] (a C-contiguous array) will be read soon."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        p = builder.bitcast(builder.gep(a.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# Rows prefetched ahead of the dot products that read them, in the re-rank and in the exact re-score of
# one query's routing (all of them at once before, issue 24): GloVe's re-rank 2.7 -> 2.2 us a query at
# refine 2, 3.8 -> 2.9 at refine 3; MiniLM-384's 10.3 -> 9.3 at refine 4 (8 or 16 ahead: between).
ROWS_AHEAD = 4


@numba.njit(inline="always")
def prefetch_row(x, i):
    """Hint that every cache line of row i of x float32 (N, d), C-contiguous,
    will be read soon (at d = 384 a row is 24 lines, and the first alone
    leaves the rest to arrive one by one)."""
    d = x.shape[1]
    for off in range(0, d, 16):
        prefetch(x, i * d + off)
    prefetch(x, i * d + d - 1)


@intrinsic
def half_to_float(typingctx, x):
    """The IEEE half-precision number whose bits are the uint16 x, as float32
    (one vcvtph2ps per 8 values where the CPU has F16C)."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen
