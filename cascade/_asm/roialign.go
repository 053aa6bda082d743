// Command _asm writes cascade's RoIAlign kernel (../roialign_amd64.s) and its
// Go declaration (../roialign_stub_amd64.go) with avo, so that a plain
// `go build` gets the AVX2 path without GOEXPERIMENT=simd. It is its own
// module so that avo stays out of htcstream's dependencies; run it with
// `go generate ./cascade`.
package main

import (
	"flag"
	"fmt"
	"go/token"
	"go/types"
	"os"

	"github.com/mmcloughlin/avo/attr"
	"github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/gotypes"
	"github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// axisWeight mirrors cascade.axisWeight {idx int; w float32}. Declaring it
// here, rather than loading the cascade package, keeps the generator from
// type-checking cascade's cgo dependencies; roialign_amd64.go asserts at
// compile time that the layout below is the real one.
const (
	weightSize = 16
	idxOffset  = 0
	wOffset    = 8
)

func main() {
	// avo's own global flags sit on flag.CommandLine: ours take a set of
	// their own for this build context
	fs := flag.NewFlagSet("_asm", flag.ExitOnError)
	flags := build.NewFlags(fs)
	fs.Parse(os.Args[1:])
	c := build.NewContext()
	c.ConstraintExpr("!purego")

	pkg := types.NewPackage("github.com/htcstream/htcstream/cascade", "cascade")
	fields := []*types.Var{
		types.NewField(token.NoPos, pkg, "idx", types.Typ[types.Int], false),
		types.NewField(token.NoPos, pkg, "w", types.Typ[types.Float32], false),
	}
	name := types.NewTypeName(token.NoPos, pkg, "axisWeight", nil)
	types.NewNamed(name, types.NewStruct(fields, nil), nil)
	pkg.Scope().Insert(name)
	sig, err := gotypes.ParseSignatureInPackage(pkg,
		"func(dst, img []float32, c, w int, ys, xs []axisWeight, xat []int, add bool)")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	c.Function("accumulateRowAVX2")
	c.Attributes(attr.NOSPLIT)
	c.Signature(sig)
	c.Doc(
		"accumulateRowAVX2 is accumulateRowScalar on 8-wide FMAs: each bin of",
		"dst (len(xat)-1 bins of c values) becomes (or, with add, gains) the",
		"weighted sum of its positions of img, 64, 32, then 8 channels at a time",
		"in accumulators that stay in registers across the bin's samples.",
		"c is a multiple of 8 and every index is inside img and dst: the caller",
		"checks, this reads unchecked.",
	)
	kernel(c)
	if build.Main(flags.Config(), c) != 0 {
		os.Exit(1)
	}
}

// mem is an argument's slot in the frame, for an instruction to read in place.
func mem(p gotypes.Component) operand.Mem {
	b, err := p.Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

func kernel(c *build.Context) {
	dst := c.Load(c.Param("dst").Base(), c.GP64())
	img := c.Load(c.Param("img").Base(), c.GP64())
	cb := c.Load(c.Param("c"), c.GP64())
	c.SHLQ(operand.U8(2), cb) // a bin's bytes
	xat := c.Load(c.Param("xat").Base(), c.GP64())

	// Loop bounds the hot loop only compares against live in the frame, so
	// that the registers go to the loop's pointers and accumulators.
	locals := c.AllocLocal(16)
	ysEnd, xatEnd := locals, locals.Offset(8)
	t := c.Load(c.Param("ys").Len(), c.GP64())
	c.SHLQ(operand.U8(4), t)
	c.ADDQ(mem(c.Param("ys").Base()), t)
	c.MOVQ(t, ysEnd)
	t = c.Load(c.Param("xat").Len(), c.GP64())
	c.LEAQ(operand.Mem{Base: xat, Index: t, Scale: 8, Disp: -8}, t)
	c.MOVQ(t, xatEnd)

	c.Label("bin")
	c.CMPQ(xat, xatEnd)
	c.JAE(operand.LabelRef("done"))
	// the bin's columns: xs[xat[q]:xat[q+1]]
	xsp, xend := c.GP64(), c.GP64()
	c.MOVQ(operand.Mem{Base: xat}, xsp)
	c.SHLQ(operand.U8(4), xsp)
	c.ADDQ(mem(c.Param("xs").Base()), xsp)
	c.MOVQ(operand.Mem{Base: xat, Disp: 8}, xend)
	c.SHLQ(operand.U8(4), xend)
	c.ADDQ(mem(c.Param("xs").Base()), xend)
	k := c.GP64()
	c.XORQ(k, k)
	for _, n := range []int{8, 4, 1} {
		block(c, n, dst, img, cb, k, xsp, xend, ysEnd)
	}
	c.ADDQ(cb, dst)
	c.ADDQ(operand.U8(8), xat)
	c.JMP(operand.LabelRef("bin"))

	c.Label("done")
	c.VZEROUPPER()
	c.RET()
}

// block emits the loop over a bin's channels n vectors (8n channels) at a
// time, from byte k while n vectors fit. Each channel's sum runs in the
// order of accumulateRowScalar (rows, then columns) with the same weights
// (wy*wx), but fused: the result differs from the scalar loop's by rounding.
func block(c *build.Context, n int, dst, img, cb, k, xsp, xend reg.Register, ysEnd operand.Mem) {
	width := 32 * n
	l := func(s string) string { return fmt.Sprintf("%s%d", s, n) }
	c.Commentf("%d channels at a time", 8*n)
	c.Label(l("block"))
	end := c.GP64()
	c.LEAQ(operand.Mem{Base: k, Disp: width}, end)
	c.CMPQ(end, cb)
	c.JA(operand.LabelRef(l("blocks_done")))

	acc := make([]reg.VecVirtual, n)
	for i := range acc {
		acc[i] = c.YMM()
	}
	out := func(i int) operand.Mem { return operand.Mem{Base: dst, Index: k, Scale: 1, Disp: 32 * i} }
	c.CMPB(mem(c.Param("add")), operand.U8(0))
	c.JE(operand.LabelRef(l("zero")))
	for i, a := range acc {
		c.VMOVUPS(out(i), a)
	}
	c.JMP(operand.LabelRef(l("rows")))
	c.Label(l("zero"))
	for _, a := range acc {
		c.VXORPS(a, a, a)
	}

	c.Label(l("rows"))
	yp := c.GP64()
	c.MOVQ(mem(c.Param("ys").Base()), yp)
	c.Label(l("row"))
	c.CMPQ(yp, ysEnd)
	c.JAE(operand.LabelRef(l("rows_done")))
	wy, row := c.YMM(), c.GP64()
	c.VBROADCASTSS(operand.Mem{Base: yp, Disp: wOffset}, wy)
	c.MOVQ(operand.Mem{Base: yp, Disp: idxOffset}, row)
	c.IMULQ(mem(c.Param("w")), row)
	xp := c.GP64()
	c.MOVQ(xsp, xp)

	c.Label(l("col"))
	c.CMPQ(xp, xend)
	c.JAE(operand.LabelRef(l("cols_done")))
	// the weight's product on vectors: a scalar MULSS is legacy SSE between
	// AVX instructions, which stalls
	wv, o := c.YMM(), c.GP64()
	c.VBROADCASTSS(operand.Mem{Base: xp, Disp: wOffset}, wv)
	c.VMULPS(wv, wy, wv)
	c.MOVQ(operand.Mem{Base: xp, Disp: idxOffset}, o)
	c.ADDQ(row, o)
	c.IMULQ(cb, o)
	c.ADDQ(k, o)
	for i, a := range acc {
		c.VFMADD231PS(operand.Mem{Base: img, Index: o, Scale: 1, Disp: 32 * i}, wv, a)
	}
	c.ADDQ(operand.U8(weightSize), xp)
	c.JMP(operand.LabelRef(l("col")))
	c.Label(l("cols_done"))
	c.ADDQ(operand.U8(weightSize), yp)
	c.JMP(operand.LabelRef(l("row")))

	c.Label(l("rows_done"))
	for i, a := range acc {
		c.VMOVUPS(a, out(i))
	}
	c.ADDQ(operand.U32(width), k)
	c.JMP(operand.LabelRef(l("block")))
	c.Label(l("blocks_done"))
}
