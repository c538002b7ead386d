package nn

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestProfileResNet18(t *testing.T) {
	dir := os.Getenv("WTOOL_R18")
	if dir == "" {
		t.Skip()
	}
	a, b := loadNet(t, dir+"/a"), loadNet(t, dir+"/b")
	d := openTestData(t, dir+"/images.safetensors")
	t0 := time.Now()
	_, _, _, err := Forward(context.Background(), a, d, 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("forward 32: %v", time.Since(t0))
	t0 = time.Now()
	s, err := CollectStats(context.Background(), []*Net{a, b}, d, StatsOptions{BatchSize: 32, Select: func(p Point) bool { return p.Kind == Activation }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("joint points only: %v (%d entries)", time.Since(t0), len(s.Modules))
	t0 = time.Now()
	s, err = CollectStats(context.Background(), []*Net{a, b}, d, StatsOptions{BatchSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("joint all: %v (%d entries)", time.Since(t0), len(s.Modules))
}
