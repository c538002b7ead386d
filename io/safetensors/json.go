package safetensors

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/wtool/wtool/tensors"
)

// A small strict JSON reader for safetensors headers. encoding/json is not
// used because it accepts what the format must reject: it matches struct keys
// case-insensitively, keeps the last of duplicate keys, replaces invalid UTF-8
// silently and decodes 1.0 or 1e3 into integers. The grammar accepted here is
// RFC 8259, with the same choices as the reference implementation's serde_json:
// unknown fields in a tensor entry are skipped, nesting is limited to 128
// levels, lone UTF-16 surrogates in \u escapes are errors.

const maxDepth = 128

type parser struct {
	s     []byte
	i     int
	depth int
	ctx   context.Context
	// shapes are carved out of blocks of this arena, so that a header of a
	// million tensors does not make a million small allocations
	arena []int64
}

// shapeArenaBlock is the size of one block of the shape arena.
const shapeArenaBlock = 1 << 14

// appendDim adds a dimension to the shape being parsed, which starts at
// index start of the current block; it returns the (possibly moved) start.
func (p *parser) appendDim(start int, d uint64) int {
	if len(p.arena) == cap(p.arena) {
		n := len(p.arena) - start
		block := make([]int64, n, max(shapeArenaBlock, 2*(n+1)))
		copy(block, p.arena[start:])
		p.arena, start = block, 0
	}
	p.arena = append(p.arena, int64(d)) // the bits of d; checked when validated
	return start
}

// rawTensor is a header entry before validation; numbers are kept as the
// unsigned 64-bit values the format defines.
type rawTensor struct {
	name    string
	dtype   tensors.DType
	shape   []int64 // the bits of unsigned values: > MaxInt64 shows as negative
	offsets [2]uint64
}

type rawHeader struct {
	metadata    map[string]string
	hasMetadata bool
	tensors     []rawTensor
	names       map[string]int // every tensor name
}

func (p *parser) errorf(k error, format string, args ...any) error {
	return &Error{Kind: k, Detail: fmt.Sprintf("at byte %d of the header: ", p.i) + fmt.Sprintf(format, args...)}
}

func (p *parser) syntax(format string, args ...any) error {
	return p.errorf(ErrInvalidHeaderDeserialization, format, args...)
}

func (p *parser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek() (byte, bool) {
	if p.i < len(p.s) {
		return p.s[p.i], true
	}
	return 0, false
}

func (p *parser) expect(c byte) error {
	p.ws()
	if b, ok := p.peek(); !ok {
		return p.syntax("unexpected end of header, expected %q", c)
	} else if b != c {
		return p.syntax("expected %q, found %q", c, b)
	}
	p.i++
	return nil
}

// object parses '{' (key ':' value (',' key ':' value)*)? '}' and calls
// member for each key with the parser positioned at its value.
func (p *parser) object(member func(key string) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	p.depth++
	if p.depth > maxDepth {
		return p.syntax("nesting deeper than %d levels", maxDepth)
	}
	defer func() { p.depth-- }()
	p.ws()
	if b, ok := p.peek(); ok && b == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		p.ws()
		if err := member(key); err != nil {
			return err
		}
		p.ws()
		b, ok := p.peek()
		if !ok {
			return p.syntax("unexpected end of header inside an object")
		}
		p.i++
		switch b {
		case ',':
		case '}':
			return nil
		default:
			return p.syntax("expected ',' or '}', found %q", b)
		}
	}
}

// array parses '[' (value (',' value)*)? ']' calling elem for each value.
func (p *parser) array(elem func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	p.depth++
	if p.depth > maxDepth {
		return p.syntax("nesting deeper than %d levels", maxDepth)
	}
	defer func() { p.depth-- }()
	p.ws()
	if b, ok := p.peek(); ok && b == ']' {
		p.i++
		return nil
	}
	for {
		p.ws()
		if err := elem(); err != nil {
			return err
		}
		p.ws()
		b, ok := p.peek()
		if !ok {
			return p.syntax("unexpected end of header inside an array")
		}
		p.i++
		switch b {
		case ',':
		case ']':
			return nil
		default:
			return p.syntax("expected ',' or ']', found %q", b)
		}
	}
}

// str parses a JSON string. The header was checked to be valid UTF-8 before
// parsing; escapes are decoded, control characters must be escaped.
func (p *parser) str() (string, error) {
	if b, ok := p.peek(); !ok || b != '"' {
		if !ok {
			return "", p.syntax("unexpected end of header, expected a string")
		}
		return "", p.syntax("expected a string, found %q", b)
	}
	p.i++
	start := p.i
	// fast path: no escapes
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '"' {
			s := string(p.s[start:p.i])
			p.i++
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.syntax("control character %#02x in a string", c)
		}
		p.i++
	}
	buf := append([]byte(nil), p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.syntax("control character %#02x in a string", c)
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		p.i++ // the backslash
		e, ok := p.peek()
		if !ok {
			break
		}
		p.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 {
					return "", p.syntax("lone trailing surrogate in a \\u escape")
				}
				if p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
					p.i += 2
					r2, err := p.hex4()
					if err != nil {
						return "", err
					}
					r = utf16.DecodeRune(r, r2)
					if r == utf8.RuneError {
						return "", p.syntax("invalid surrogate pair in a \\u escape")
					}
				} else {
					return "", p.syntax("lone leading surrogate in a \\u escape")
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.syntax("invalid escape \\%c", e)
		}
	}
	return "", p.syntax("unterminated string")
}

func (p *parser) hex4() (rune, error) {
	if p.i+4 > len(p.s) {
		return 0, p.syntax("truncated \\u escape")
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, p.syntax("invalid hex digit %q in a \\u escape", c)
		}
		r = r<<4 | rune(d)
	}
	p.i += 4
	return r, nil
}

// number scans a JSON number and returns its text.
func (p *parser) number() (string, error) {
	start := p.i
	if b, ok := p.peek(); ok && b == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	intStart := p.i
	if n := digits(); n == 0 {
		return "", p.syntax("invalid number")
	} else if n > 1 && p.s[intStart] == '0' {
		return "", p.syntax("number with a leading zero")
	}
	if b, ok := p.peek(); ok && b == '.' {
		p.i++
		if digits() == 0 {
			return "", p.syntax("invalid number")
		}
	}
	if b, ok := p.peek(); ok && (b == 'e' || b == 'E') {
		p.i++
		if b, ok := p.peek(); ok && (b == '+' || b == '-') {
			p.i++
		}
		if digits() == 0 {
			return "", p.syntax("invalid number")
		}
	}
	return string(p.s[start:p.i]), nil
}

// u64 parses an unsigned integer as the format requires for shapes and
// offsets: negative numbers, fractions, exponents and values past 2^64-1 are
// errors.
func (p *parser) u64() (uint64, error) {
	at := p.i
	b, ok := p.peek()
	if !ok || (b != '-' && (b < '0' || b > '9')) {
		if !ok {
			return 0, p.syntax("unexpected end of header, expected an unsigned integer")
		}
		return 0, p.syntax("expected an unsigned integer, found %q", b)
	}
	text, err := p.number()
	if err != nil {
		return 0, err
	}
	v, perr := strconv.ParseUint(text, 10, 64)
	if perr != nil {
		p.i = at
		return 0, p.syntax("%s is not an unsigned 64-bit integer", text)
	}
	return v, nil
}

// skip parses and discards any JSON value.
func (p *parser) skip() error {
	p.ws()
	b, ok := p.peek()
	if !ok {
		return p.syntax("unexpected end of header, expected a value")
	}
	switch {
	case b == '{':
		return p.object(func(string) error { return p.skip() })
	case b == '[':
		return p.array(p.skip)
	case b == '"':
		_, err := p.str()
		return err
	case b == '-' || ('0' <= b && b <= '9'):
		_, err := p.number()
		return err
	}
	for _, lit := range []string{"true", "false", "null"} {
		if len(p.s)-p.i >= len(lit) && string(p.s[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return nil
		}
	}
	return p.syntax("unexpected character %q", b)
}

func (p *parser) null() bool {
	if len(p.s)-p.i >= 4 && string(p.s[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// parseHeaderJSON decodes a header that is known to be valid UTF-8. It
// stops with ctx's error when ctx is done.
func parseHeaderJSON(ctx context.Context, s []byte) (*rawHeader, error) {
	p := &parser{s: s, ctx: ctx, arena: make([]int64, 0, min(shapeArenaBlock, len(s)/8+1))}
	// a capacity hint: every tensor entry has a data_offsets field (a name
	// holding the word only makes the hint larger)
	n := bytes.Count(s, []byte(`"data_offsets"`))
	h := &rawHeader{names: make(map[string]int, n+1), tensors: make([]rawTensor, 0, n)}
	seen := h.names
	members := 0
	err := p.object(func(key string) error {
		if members++; members%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if _, dup := seen[key]; dup {
			return p.errorf(ErrDuplicateKey, "%q", key)
		}
		seen[key] = 0
		if key == "__metadata__" {
			return p.metadata(h)
		}
		t, err := p.tensorInfo(key)
		if err != nil {
			return err
		}
		h.tensors = append(h.tensors, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, p.syntax("trailing characters after the header object")
	}
	return h, nil
}

func (p *parser) metadata(h *rawHeader) error {
	h.hasMetadata = true
	if p.null() {
		return nil
	}
	if b, ok := p.peek(); !ok || b != '{' {
		return p.errorf(ErrInvalidMetadata, "__metadata__ is not an object")
	}
	h.metadata = make(map[string]string)
	looksLikeTensor := false
	err := p.object(func(key string) error {
		if _, dup := h.metadata[key]; dup {
			return p.errorf(ErrDuplicateKey, "__metadata__ key %q", key)
		}
		if key == "dtype" || key == "data_offsets" || key == "shape" {
			looksLikeTensor = true
		}
		if b, ok := p.peek(); !ok || b != '"' {
			if looksLikeTensor {
				return p.errorf(ErrReservedName, "__metadata__ holds tensor fields")
			}
			return p.errorf(ErrInvalidMetadata, "value of key %q is not a string", key)
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		h.metadata[key] = v
		return nil
	})
	return err
}

func (p *parser) tensorInfo(name string) (rawTensor, error) {
	t := rawTensor{name: name}
	if b, ok := p.peek(); !ok || b != '{' {
		return t, p.syntax("tensor %q: entry is not an object", name)
	}
	var haveDtype, haveShape, haveOffsets bool
	err := p.object(func(key string) error {
		switch key {
		case "dtype":
			if haveDtype {
				return p.errorf(ErrDuplicateKey, "tensor %q: field dtype", name)
			}
			haveDtype = true
			s, err := p.str()
			if err != nil {
				return err
			}
			dt, ok := tensors.ParseDType(s)
			if !ok {
				return p.syntax("tensor %q: unknown dtype %q", name, s)
			}
			t.dtype = dt
		case "shape":
			if haveShape {
				return p.errorf(ErrDuplicateKey, "tensor %q: field shape", name)
			}
			haveShape = true
			start := len(p.arena)
			err := p.array(func() error {
				v, err := p.u64()
				start = p.appendDim(start, v)
				return err
			})
			t.shape = p.arena[start:len(p.arena):len(p.arena)]
			return err
		case "data_offsets":
			if haveOffsets {
				return p.errorf(ErrDuplicateKey, "tensor %q: field data_offsets", name)
			}
			haveOffsets = true
			n := 0
			err := p.array(func() error {
				if n == 2 {
					return p.syntax("tensor %q: data_offsets has more than 2 values", name)
				}
				v, err := p.u64()
				t.offsets[n] = v
				n++
				return err
			})
			if err == nil && n != 2 {
				return p.syntax("tensor %q: data_offsets has %d values, want 2", name, n)
			}
			return err
		default: // unknown fields are ignored, as the reference does
			return p.skip()
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	switch {
	case !haveDtype:
		return t, p.syntax("tensor %q: missing field dtype", name)
	case !haveShape:
		return t, p.syntax("tensor %q: missing field shape", name)
	case !haveOffsets:
		return t, p.syntax("tensor %q: missing field data_offsets", name)
	}
	return t, nil
}

// appendJSONString appends s as a JSON string the way serde_json writes it:
// '"' and '\\' escaped, control characters as \b \f \n \r \t or \u00xx,
// everything else (including non-ASCII) as is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
