package merge

// task-arithmetic: base + lambda * sum_i w_i (x_i - base) (mergekit's
// task_arithmetic; not normalized unless asked).
func init() {
	Register(gtaMethod{about: about{name: "task-arithmetic", doc: "base + lambda * sum of weighted task vectors"}})
}
