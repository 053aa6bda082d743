// Package pyenv says where the training module's Python is and how a Go
// process runs it: the one place that knows, for the CLI and for the tests
// that call into training/.
package pyenv

import (
	"os"
	"strings"
)

// Interpreter is Debian's python3: a python3 earlier on PATH (pyenv, venv)
// usually lacks Debian's PyTorch, torchvision and onnx, which scripts/setup
// installs for this one.
const Interpreter = "/usr/bin/python3"

// Env is env with dir (the training folder) first on PYTHONPATH and
// PYTHONSAFEPATH set, so a folder named htc in the working directory cannot
// shadow the training module.
func Env(env []string, dir string) []string {
	out := make([]string, 0, len(env)+2)
	path := dir
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PYTHONPATH":
			if v != "" {
				path = dir + string(os.PathListSeparator) + v
			}
		case "PYTHONSAFEPATH":
		default:
			out = append(out, kv)
		}
	}
	return append(out, "PYTHONPATH="+path, "PYTHONSAFEPATH=1")
}
