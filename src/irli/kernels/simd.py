"""CPU primitives for the compiled kernels, written as LLVM IR inside numba.

`lut16(codes, at, npairs, lut, out, thr)` scores one block of 32 items of
4-bit product-quantised codes against a query's 8-bit lookup tables: the
shuffle-based table lookup of FAISS fast-scan and ScaNN, 32 lookups per
instruction (AVX2 `vpshufb`). Where the CPU lacks AVX2, or is not x86, a plain
loop computes the same numbers. `ctz32` counts trailing zero bits and
`prefetch` hints that an array element will be read soon.

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
from numba.extending import intrinsic


def _host_has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        import llvmlite.binding as llvm

        return "+avx2" in llvm.get_host_cpu_features().flatten().split(",")
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return False


HAVE_AVX2 = _host_has_avx2()

_I8x32 = ir.VectorType(ir.IntType(8), 32)
_I16x32 = ir.VectorType(ir.IntType(16), 32)


def _const_vec(ty, values):
    return ir.Constant(ty, list(values))


def _element_ptr(context, builder, arrty, arr, index):
    """Pointer to arr[index] (a 1-D C array) as i8*."""
    a = context.make_array(arrty)(context, builder, arr)
    p = builder.gep(a.data, [index])
    return builder.bitcast(p, ir.IntType(8).as_pointer())


@intrinsic
def lut16_avx2(typingctx, codes, at, npairs, lut, out, thr):
    sig = types.uint32(codes, at, npairs, lut, out, thr)

    def codegen(context, builder, signature, args):
        codes_v, at_v, np_v, lut_v, out_v, thr_v = args
        cp = _element_ptr(context, builder, signature.args[0], codes_v, at_v)
        lp = _element_ptr(context, builder, signature.args[3], lut_v, ir.Constant(ir.IntType(64), 0))
        op = _element_ptr(context, builder, signature.args[4], out_v, ir.Constant(ir.IntType(64), 0))
        pshufb = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I8x32, [_I8x32, _I8x32]), "llvm.x86.avx2.pshuf.b")
        acc_lo = cgutils.alloca_once_value(builder, ir.Constant(_I16x32, None))
        acc_hi = cgutils.alloca_once_value(builder, ir.Constant(_I16x32, None))
        low4 = _const_vec(_I8x32, [15] * 32)
        four = _const_vec(_I8x32, [4] * 32)
        vp = _I8x32.as_pointer()
        with cgutils.for_range(builder, np_v) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 32))
            c = builder.load(builder.bitcast(builder.gep(cp, [off]), vp), align=1)
            t = builder.load(builder.bitcast(builder.gep(lp, [off]), vp), align=1)
            lo = builder.call(pshufb, [t, builder.and_(c, low4)])
            hi = builder.call(pshufb, [t, builder.and_(builder.lshr(c, four), low4)])
            builder.store(builder.add(builder.load(acc_lo), builder.zext(lo, _I16x32)), acc_lo)
            builder.store(builder.add(builder.load(acc_hi), builder.zext(hi, _I16x32)), acc_hi)
        a, b = builder.load(acc_lo), builder.load(acc_hi)
        i32 = ir.IntType(32)
        first = _const_vec(ir.VectorType(i32, 16), range(16))
        second = _const_vec(ir.VectorType(i32, 16), range(16, 32))
        # lanes 0..15 hold sub-quantiser 2p, lanes 16..31 sub-quantiser 2p + 1
        sa = builder.add(builder.shuffle_vector(a, a, first), builder.shuffle_vector(a, a, second))
        sb = builder.add(builder.shuffle_vector(b, b, first), builder.shuffle_vector(b, b, second))
        s = builder.shuffle_vector(sa, sb, _const_vec(ir.VectorType(i32, 32), range(32)))
        builder.store(s, builder.bitcast(op, _I16x32.as_pointer()), align=1)
        t16 = builder.trunc(thr_v, ir.IntType(16))
        tv = builder.insert_element(ir.Constant(_I16x32, None), t16, ir.Constant(i32, 0))
        tv = builder.shuffle_vector(tv, tv, _const_vec(ir.VectorType(i32, 32), [0] * 32))
        mask = builder.icmp_unsigned(">", s, tv)
        return builder.bitcast(mask, i32)

    return sig, codegen


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


lut16 = lut16_avx2 if HAVE_AVX2 else lut16_scalar
lut16.__doc__ = """lut16(codes uint8 (·,), at int, npairs int, lut uint8 (32 npairs,),
out uint16 (32,), thr int in [0, 65535]) -> uint32: the 32 items' summed
table scores into `out`, and the bitmask of the items whose score exceeds
`thr` (bit t for item t)."""


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
