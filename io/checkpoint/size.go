package checkpoint

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DefaultMaxShardSize is huggingface_hub's default shard limit: 5 GB.
const DefaultMaxShardSize = 5_000_000_000

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"B", 1},
}

// ParseSize parses a byte size the way Hugging Face tools accept it: a plain
// number of bytes, or a number with a decimal unit (KB, MB, GB, TB: powers of
// 1000) or a binary one (KiB, MiB, GiB, TiB: powers of 1024), case-insensitive,
// such as "5GB", "500MB", "1.5GiB".
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("invalid size %q (want a positive number of bytes or a size like 500MB, 5GB, 2GiB)", s)
	}
	b := v * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if b < 1 {
		return 0, fmt.Errorf("size %q is less than one byte", s)
	}
	return int64(b), nil
}

// FormatSize formats a byte count with a decimal unit, such as "4.29 GB".
func FormatSize(n int64) string {
	switch {
	case n >= 1e12:
		return fmt.Sprintf("%.2f TB", float64(n)/1e12)
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
