package mappings

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"unicode/utf8"

	"github.com/itchyny/gojq"

	"intake"
)

// What one delivery's JQ may produce is bounded, because everything the mappings yield travels
// through the workflow history (the Map step's result, Validate's, Upsert's input, Audit's
// input beside the delivery itself) and Temporal refuses any payload over its blob limit: the
// workflow task then fails and is retried forever, leaving the delivery "accepted" for good.
// Over a limit, the mapping fails with a MappingError instead (found by hostile-input tests).

// MaxPayloadBytes is Temporal's default payload limit (dynamic config limit.blobSize.error).
const MaxPayloadBytes = 2 << 20

// MaxValueBytes bounds the JSON size of everything one expression yields.
const MaxValueBytes = MaxPayloadBytes

// MaxValueDepth bounds how deep a mapped property nests. MongoDB stores documents at most 100
// levels deep; an entity's property sits a few levels down in its documents, and the store keeps
// a nested array wrapped in an object (one level more per array in an array).
const MaxValueDepth = 40

// changeOverhead is a mapped entity's JSON besides its values (template, operation, outcome, a
// message of up to MaxMessageBytes and the field names).
const changeOverhead = 192 + MaxMessageBytes

// MaxMessageBytes bounds a validation message (long values are shown cut).
const MaxMessageBytes = 512

// size estimates v's JSON encoding as encoding/json writes it (HTML characters escaped), its
// nesting depth, and whether it holds a number JSON cannot carry (NaN, ±Inf). It stops counting
// once the size passes limit, so a huge value costs no more than limit to measure.
type size struct {
	bytes, depth int
	nonFinite    bool
	limit        int
}

func measure(v any, limit int) size {
	s := size{limit: limit}
	s.walk(v, 1)
	return s
}

func (s *size) over() bool { return s.bytes > s.limit }

func (s *size) walk(v any, depth int) {
	if s.over() {
		return
	}
	s.depth = max(s.depth, depth)
	switch x := v.(type) {
	case nil:
		s.bytes += 4
	case bool:
		s.bytes += 5
	case int:
		s.bytes += 20
	case float64:
		s.nonFinite = s.nonFinite || math.IsNaN(x) || math.IsInf(x, 0)
		s.bytes += 24
	case *big.Int:
		s.bytes += x.BitLen()/3 + 2
	case string:
		s.str(x)
	case []any:
		s.bytes += 2
		for _, e := range x {
			s.bytes++
			if s.walk(e, depth+1); s.over() {
				return
			}
		}
	case map[string]any:
		s.bytes += 2
		for k, e := range x {
			s.str(k)
			s.bytes += 2
			if s.walk(e, depth+1); s.over() {
				return
			}
		}
	case map[string]string: // headers
		s.bytes += 2
		for k, e := range x {
			s.str(k)
			s.str(e)
			s.bytes += 2
		}
	default:
		s.bytes += 16
	}
}

func (s *size) str(x string) {
	if s.bytes += len(x) + 2; s.over() {
		return
	}
	for i := 0; i < len(x); {
		c := x[i]
		switch {
		case c == '<' || c == '>' || c == '&' || c < 0x20:
			s.bytes += 5 // \u00XX
		case c == '"' || c == '\\':
			s.bytes++
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(x[i:])
			if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
				s.bytes += 6 - n
			}
			i += n
			continue
		}
		i++
	}
}

// checkOutput refuses what an expression yielded once it is too big to ever travel through a
// workflow history (so a runaway value fails here, before it is copied any further).
func checkOutput(field string, total *int, v any) error {
	s := measure(v, MaxValueBytes-*total)
	*total += s.bytes
	if s.over() {
		return fmt.Errorf("%s: yields more than %d bytes of JSON (the limit of what one expression may produce)", field, MaxValueBytes)
	}
	return nil
}

// checkStorable refuses a mapped property value that could not be stored or carried: a number
// JSON cannot write (NaN, infinite: the step's result could not even be encoded) or a value
// nested deeper than MaxValueDepth.
func checkStorable(field string, v any) error {
	s := measure(v, MaxValueBytes)
	switch {
	case s.nonFinite:
		return fmt.Errorf("%s: yields a number JSON cannot represent (NaN or infinite)", field)
	case s.depth > MaxValueDepth:
		return fmt.Errorf("%s: yields a value nested more than %d levels deep", field, MaxValueDepth)
	}
	return nil
}

// changeBytes estimates a mapped entity's share of a step's payload.
func changeBytes(c *intake.EntityChange, limit int) int {
	n := changeOverhead + len(c.Template) + len(c.Identifier) + len(c.Message)
	if c.Title != nil {
		n += measure(*c.Title, limit).bytes
	}
	for _, m := range []map[string]any{c.Properties, c.Relations} {
		if m != nil {
			n += measure(m, limit).bytes
		}
	}
	for _, f := range c.Clear {
		n += len(f) + 3
	}
	return n
}

// Multiplication is the one JQ operator that builds a huge value in a single step: gojq checks
// its context (the time budget) between steps, so `"x" * 1e9` allocated a gigabyte and ran for
// seconds before the budget was noticed. Every `*` and `*=` of an operator's expression is
// compiled as _intake_mul, which refuses a product over MaxValueBytes and leaves everything else
// to gojq's own `*`.
const guardedMul = "_intake_mul"

// maxProductBits bounds an integer product (gojq multiplies big integers exactly).
const maxProductBits = 1 << 16

var errTooBig = errors.New("the product would be over the size limit")

// mulCode is gojq's own multiplication, which _intake_mul calls once the sizes are known.
var mulCode = func() *gojq.Code {
	q, err := gojq.Parse("$l * $r")
	if err != nil {
		panic(err)
	}
	c, err := gojq.Compile(q, gojq.WithVariables([]string{"$l", "$r"}))
	if err != nil {
		panic(err)
	}
	return c
}()

func guardedMultiply(_ any, args []any) any {
	l, r := args[0], args[1]
	if err := checkProduct(l, r); err != nil {
		return err
	}
	v, ok := mulCode.Run(nil, l, r).Next()
	if !ok {
		return nil
	}
	return v
}

func checkProduct(l, r any) error {
	if s, ok := l.(string); ok {
		return checkRepeat(s, r)
	}
	if s, ok := r.(string); ok {
		return checkRepeat(s, l)
	}
	if bl, br := intBits(l), intBits(r); bl+br > maxProductBits {
		return fmt.Errorf("%w: an integer of more than %d bits", errTooBig, maxProductBits)
	}
	return nil
}

func checkRepeat(s string, n any) error {
	var times float64
	switch x := n.(type) {
	case int:
		times = float64(x)
	case float64:
		times = x
	case *big.Int:
		times, _ = new(big.Float).SetInt(x).Float64()
	default:
		return nil // not a repetition: gojq reports the type error
	}
	if times > 0 && float64(len(s))*math.Ceil(times) > MaxValueBytes {
		return fmt.Errorf("%w: repeating a string of %d bytes %v times is more than %d bytes", errTooBig, len(s), n, MaxValueBytes)
	}
	return nil
}

func intBits(v any) int {
	switch x := v.(type) {
	case int:
		return 64
	case *big.Int:
		return x.BitLen()
	}
	return 0
}

// guardQuery rewrites every `a * b` of q as _intake_mul(a; b) (same operands, evaluated in the
// same order, since both compile as a two-argument call) and defines _multiply, the function
// gojq compiles `a *= b` into, as _intake_mul too.
func guardQuery(q *gojq.Query) {
	guardQ(q)
	q.FuncDefs = append([]*gojq.FuncDef{{Name: "_multiply", Args: []string{"a", "b"},
		Body: callQuery(guardedMul, funcQuery("a"), funcQuery("b"))}}, q.FuncDefs...)
}

func funcQuery(name string) *gojq.Query {
	return &gojq.Query{Term: &gojq.Term{Type: gojq.TermTypeFunc, Func: &gojq.Func{Name: name}}}
}

func callQuery(name string, args ...*gojq.Query) *gojq.Query {
	return &gojq.Query{Term: &gojq.Term{Type: gojq.TermTypeFunc, Func: &gojq.Func{Name: name, Args: args}}}
}

func guardQ(q *gojq.Query) {
	if q == nil {
		return
	}
	for _, fd := range q.FuncDefs {
		guardQ(fd.Body)
	}
	guardTerm(q.Term)
	guardQ(q.Left)
	guardQ(q.Right)
	guardPatterns(q.Patterns)
	if q.Op == gojq.OpMul {
		*q = *callQuery(guardedMul, q.Left, q.Right)
	}
}

func guardTerm(t *gojq.Term) {
	if t == nil {
		return
	}
	guardIndex(t.Index)
	if t.Func != nil {
		for _, a := range t.Func.Args {
			guardQ(a)
		}
	}
	if t.Object != nil {
		for _, kv := range t.Object.KeyVals {
			guardString(kv.KeyString)
			guardQ(kv.KeyQuery)
			guardQ(kv.Val)
		}
	}
	if t.Array != nil {
		guardQ(t.Array.Query)
	}
	if t.Unary != nil {
		guardTerm(t.Unary.Term)
	}
	guardString(t.Str)
	if t.If != nil {
		guardQ(t.If.Cond)
		guardQ(t.If.Then)
		for _, e := range t.If.Elif {
			guardQ(e.Cond)
			guardQ(e.Then)
		}
		guardQ(t.If.Else)
	}
	if t.Try != nil {
		guardQ(t.Try.Body)
		guardQ(t.Try.Catch)
	}
	if r := t.Reduce; r != nil {
		guardQ(r.Query)
		guardPatterns(r.Patterns)
		guardQ(r.Start)
		guardQ(r.Update)
	}
	if f := t.Foreach; f != nil {
		guardQ(f.Query)
		guardPatterns(f.Patterns)
		guardQ(f.Start)
		guardQ(f.Update)
		guardQ(f.Extract)
	}
	if t.Label != nil {
		guardQ(t.Label.Body)
	}
	guardQ(t.Query)
	for _, s := range t.SuffixList {
		guardIndex(s.Index)
	}
}

func guardIndex(x *gojq.Index) {
	if x != nil {
		guardString(x.Str)
		guardQ(x.Start)
		guardQ(x.End)
	}
}

func guardString(s *gojq.String) {
	if s != nil {
		for _, q := range s.Queries {
			guardQ(q)
		}
	}
}

func guardPatterns(ps []*gojq.Pattern) {
	for _, p := range ps {
		if p == nil {
			continue
		}
		guardPatterns(p.Array)
		for _, o := range p.Object {
			guardString(o.KeyString)
			guardQ(o.KeyQuery)
			guardPatterns([]*gojq.Pattern{o.Val})
		}
	}
}

// JSONSize estimates v's JSON encoding in bytes, counting no further than limit.
func JSONSize(v any, limit int) int { return measure(v, limit).bytes }
