package lowrank

import (
	"bytes"
	"fmt"

	"gonum.org/v1/plot/vg/vgimg"

	"github.com/wtool/wtool/io/fsafe"
)

// savePNG writes the image atomically (a temporary beside path, renamed at
// the end), replacing an existing file: callers check that path is not an
// input and may be replaced.
func savePNG(path string, img *vgimg.Canvas) error {
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&b); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return fsafe.WriteFile(path, b.Bytes(), true)
}
