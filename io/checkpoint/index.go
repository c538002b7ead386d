package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/wtool/wtool/io/fsafe"
)

// IndexFileName is the name Hugging Face gives the index of a sharded model.
const IndexFileName = "model.safetensors.index.json"

// Index is a sharded checkpoint's index: which shard file holds each tensor.
type Index struct {
	// TotalSize is metadata.total_size, the sum of the tensors' byte sizes as
	// the writer recorded it (0 when absent).
	TotalSize int64
	// WeightMap maps each tensor name to the file name of its shard.
	WeightMap map[string]string
}

// Shards returns the distinct shard file names in ascending order.
func (ix *Index) Shards() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range ix.WeightMap {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// ReadIndex reads and checks an index file: a JSON object with a weight_map
// of tensor name to shard file name. Shard names must be plain file names in
// the index's directory (no separators, no "..").
func ReadIndex(path string) (*Index, error) {
	b, err := fsafe.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ix, err := parseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ix, nil
}

func parseIndex(b []byte) (*Index, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("index is not valid UTF-8")
	}
	var raw struct {
		Metadata  map[string]json.RawMessage `json:"metadata"`
		WeightMap json.RawMessage            `json:"weight_map"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("invalid index JSON: %w", err)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("invalid index JSON: %d bytes of trailing data after the object (at byte %d)", len(rest), dec.InputOffset())
	}
	if raw.WeightMap == nil || string(bytes.TrimSpace(raw.WeightMap)) == "null" {
		return nil, fmt.Errorf("index has no weight_map")
	}
	ix := &Index{}
	if err := json.Unmarshal(raw.WeightMap, &ix.WeightMap); err != nil {
		return nil, fmt.Errorf("weight_map must map tensor names to file names: %w", err)
	}
	if len(ix.WeightMap) == 0 {
		return nil, fmt.Errorf("weight_map is empty: the index lists no tensor (a model without tensors has no shards to index)")
	}
	if dup := duplicateKey(raw.WeightMap); dup != "" {
		return nil, fmt.Errorf("weight_map lists tensor %q twice", dup)
	}
	if ts, ok := raw.Metadata["total_size"]; ok {
		n, err := strconv.ParseFloat(strings.TrimSpace(string(ts)), 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("metadata.total_size is not a byte count: %s", ts)
		}
		ix.TotalSize = int64(n)
	}
	for name, shard := range ix.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return nil, fmt.Errorf("tensor %q: shard %q is not a plain file name", name, shard)
		}
	}
	return ix, nil
}

// duplicateKey returns a key that appears twice in the JSON object obj
// (encoding/json keeps the last one silently).
func duplicateKey(obj json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := t.(string)
		if seen[k] {
			return k
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// encodeIndex writes the index the way huggingface_hub does:
// json.dumps(index, indent=2, sort_keys=True) plus a newline, non-ASCII
// escaped as \uXXXX.
func encodeIndex(ix *Index) []byte {
	var b bytes.Buffer
	b.WriteString("{\n  \"metadata\": {\n    \"total_size\": ")
	b.WriteString(strconv.FormatInt(ix.TotalSize, 10))
	b.WriteString("\n  },\n  \"weight_map\": {")
	names := make([]string, 0, len(ix.WeightMap))
	for n := range ix.WeightMap {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		writePyJSONString(&b, n)
		b.WriteString(": ")
		writePyJSONString(&b, ix.WeightMap[n])
	}
	if len(names) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("}\n}\n")
	return b.Bytes()
}

// writePyJSONString writes s as Python's json.dumps does with ensure_ascii.
func writePyJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || r > 0x7e:
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
