package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// kv is one member of a JSON object whose order is kept.
type kv struct {
	key string
	raw json.RawMessage
}

// orderedObject reads a JSON object's members in order, refusing duplicate
// keys and trailing data.
func orderedObject(data []byte) ([]kv, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []kv
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("a JSON object key is not a string")
		}
		if seen[key] {
			return nil, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, kv{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

func get(o []kv, key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.key == key {
			return m.raw, true
		}
	}
	return nil, false
}

func set(o *[]kv, key string, raw []byte) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].raw = raw
			return
		}
	}
	*o = append(*o, kv{key, raw})
}

// encodeOrdered writes an object with one member per line (members' values
// as they are).
func encodeOrdered(o []kv) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{")
	for i, m := range o {
		if i > 0 {
			b.WriteString(",")
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		b.WriteString("\n  ")
		b.Write(k)
		b.WriteString(": ")
		b.Write(bytes.TrimSpace(m.raw))
	}
	if len(o) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	if !json.Valid(b.Bytes()) {
		return nil, errors.New("internal error: invalid JSON written")
	}
	return b.Bytes(), nil
}
