package permute

// Decoding into the bf16 K-blocks of the AVX512-BF16 GEMM: the stored
// values are copied as they are (no widening), with the permutations
// applied, into the pair-interleaved layout of bfgemm.PairRows: block
// position pos of unit i at dst[(pos/2)*2n + 2i + pos%2].

// bfTile is the number of units a worker gathers before writing them out
// in the major layout, so that each write fills a cache line.
const bfTile = 16

// unitParts splits the units [0, n) among the workers in multiples of tile.
func (e *engine) unitParts(n, width, tile int) [][2]int {
	w := e.workers
	if n*width < 1<<16 || w < 2 || n < 2*tile {
		return [][2]int{{0, n}}
	}
	tiles := (n + tile - 1) / tile
	w = min(w, tiles)
	out := make([][2]int, 0, w)
	for i := range w {
		out = append(out, [2]int{min(n, i*tiles/w*tile), min(n, (i+1)*tiles/w*tile)})
	}
	return out
}

// bfTile returns worker w's gathering tile for blocks of width positions.
func (e *engine) bfTile(w, width int) []uint16 {
	for len(e.bfTiles) <= w {
		e.bfTiles = append(e.bfTiles, nil)
	}
	if len(e.bfTiles[w]) < bfTile*width {
		e.bfTiles[w] = make([]uint16, bfTile*width)
	}
	return e.bfTiles[w]
}

// bfAligned reports whether a bf16 tensor's bytes can be read as uint16s.
func bfAligned(t rawTensor) bool { return u16s(t.data) != nil }

// decodeMajorBF16 copies the K positions [k0, k1) of the units [u0, u1)
// of a bf16 term (units are rows: major layout) into dst from block
// position off on.
func decodeMajorBF16(dst []uint16, n, off int, tm *term, g geom, u0, u1, k0, k1 int, tile []uint16) error {
	err := guard(tm.t, func() error {
		v := u16s(tm.t.data)
		width := k1 - k0
		m := uint16(0x7f80) // 0 once a value is Inf or NaN
		for i0 := u0; i0 < u1; i0 += bfTile {
			i1 := min(u1, i0+bfTile)
			for i := i0; i < i1; i++ {
				row := tile[(i-i0)*width : (i-i0+1)*width]
				for k := k0; k < k1; {
					base, q := tm.runAt(g, i, k)
					cnt := min(g.q-q, k1-k)
					d := row[k-k0 : k-k0+cnt]
					if tm.post != nil {
						idx := tm.post[q : q+cnt]
						for x, j := range idx {
							e := v[base+j]
							m = min(m, ^e&0x7f80)
							d[x] = e
						}
					} else {
						s := v[base+q : base+q+cnt]
						for x, e := range s {
							m = min(m, ^e&0x7f80)
							d[x] = e
						}
					}
					k += cnt
				}
			}
			units := i1 - i0
			for t := range width {
				pos := off + t
				out := dst[(pos>>1)*2*n+pos&1+2*i0:]
				out = out[:2*units-1]
				for r := range units {
					out[2*r] = tile[r*width+t]
				}
			}
		}
		if m == 0 {
			return errNonFinite
		}
		return nil
	})
	if err == errNonFinite {
		return nonFinite(tm.t, "")
	}
	return err
}

// decodeRowsBF16 copies the stored rows [p0, p1) of a bf16 term whose units
// are the innermost index (minor layout) into dst from block position off
// on: row p at position off+p-p0.
func decodeRowsBF16(dst []uint16, n, off int, tm *term, g geom, p0, p1 int) error {
	err := guard(tm.t, func() error {
		v := u16s(tm.t.data)
		m := uint16(0x7f80)
		for p := p0; p < p1; p++ {
			sp := p
			if tm.pre != nil {
				sp = tm.pre[p]
			}
			src := v[sp*g.a : sp*g.a+g.a]
			pos := off + p - p0
			out := dst[(pos>>1)*2*n+pos&1:]
			out = out[:2*n-1]
			if tm.ax != nil {
				ax := tm.ax[:n]
				for i, j := range ax {
					e := src[j]
					m = min(m, ^e&0x7f80)
					out[2*i] = e
				}
				continue
			}
			for i, e := range src {
				m = min(m, ^e&0x7f80)
				out[2*i] = e
			}
		}
		if m == 0 {
			return errNonFinite
		}
		return nil
	})
	if err == errNonFinite {
		return nonFinite(tm.t, "")
	}
	return err
}
