package pyenv

import (
	"strings"
	"testing"
)

func TestEnvPutsTheTrainingModuleFirst(t *testing.T) {
	env := Env([]string{"HOME=/h", "PYTHONPATH=/a:/b", "PYTHONSAFEPATH="}, "/t")
	got := strings.Join(env, " ")
	if got != "HOME=/h PYTHONPATH=/t:/a:/b PYTHONSAFEPATH=1" {
		t.Fatalf("env %s", got)
	}
}
