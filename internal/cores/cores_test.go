package cores

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// writeTree lays out files (path -> content) below a new temporary directory
// that stands for the file system root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// The mountinfo lines are this machine's kinds: a v2-only host, a hybrid
// (v1 controllers plus an empty unified hierarchy, as this CI box has), a
// container whose mount root is its own cgroup.
const (
	v2Mount     = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	hybridMount = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
		"32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n" +
		"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)

func TestQuota(t *testing.T) {
	cases := []struct {
		name   string
		files  map[string]string
		want   int
		wantOK bool
	}{
		{"v2 quota rounds up", map[string]string{
			"proc/self/cgroup":                               "0::/system.slice/cam.service\n",
			"proc/self/mountinfo":                            v2Mount,
			"sys/fs/cgroup/system.slice/cam.service/cpu.max": "150000 100000\n",
			"sys/fs/cgroup/system.slice/cpu.max":             "max 100000\n",
		}, 2, true},
		{"v2 ancestor's smaller quota wins", map[string]string{
			"proc/self/cgroup":                               "0::/system.slice/cam.service\n",
			"proc/self/mountinfo":                            v2Mount,
			"sys/fs/cgroup/system.slice/cam.service/cpu.max": "400000 100000\n",
			"sys/fs/cgroup/system.slice/cpu.max":             "50000 100000\n",
		}, 1, true},
		{"v2 max everywhere is no quota", map[string]string{
			"proc/self/cgroup":                 "0::/user.slice\n",
			"proc/self/mountinfo":              v2Mount,
			"sys/fs/cgroup/user.slice/cpu.max": "max 100000\n",
		}, 0, false},
		{"v2 quota below one CPU is one", map[string]string{
			"proc/self/cgroup":        "0::/a\n",
			"proc/self/mountinfo":     v2Mount,
			"sys/fs/cgroup/a/cpu.max": "20000 100000\n",
		}, 1, true},
		{"v2 container namespace sees its cgroup at the mount point", map[string]string{
			"proc/self/cgroup":      "0::/\n",
			"proc/self/mountinfo":   v2Mount,
			"sys/fs/cgroup/cpu.max": "300000 100000\n",
		}, 3, true},
		{"v2 mount root is the container's cgroup", map[string]string{
			"proc/self/cgroup":          "0::/kubepods/pod1/ctr\n",
			"proc/self/mountinfo":       "29 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"sys/fs/cgroup/ctr/cpu.max": "max 100000\n",
			"sys/fs/cgroup/cpu.max":     "200000 100000\n",
		}, 2, true},
		{"v1 cfs quota", map[string]string{
			"proc/self/cgroup":                                "4:memory:/job\n3:cpu,cpuacct:/job\n0::/\n",
			"proc/self/mountinfo":                             hybridMount,
			"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us":  "250000\n",
			"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":      "-1\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us":     "100000\n",
		}, 3, true},
		{"v1 -1 is no quota", map[string]string{
			"proc/self/cgroup":                    "1:cpu:/\n0::/\n",
			"proc/self/mountinfo":                 "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" + "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
			"sys/fs/cgroup/cpu/cpu.cfs_quota_us":  "-1\n",
			"sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
		}, 0, false},
		{"v1 memory-only hierarchy is ignored", map[string]string{
			"proc/self/cgroup":                           "4:memory:/job\n",
			"proc/self/mountinfo":                        hybridMount,
			"sys/fs/cgroup/memory/job/cpu.cfs_quota_us":  "100000\n",
			"sys/fs/cgroup/memory/job/cpu.cfs_period_us": "100000\n",
		}, 0, false},
		{"a sibling whose name extends the mount root is not below it", map[string]string{
			"proc/self/cgroup":             "0::/docker/abcdef\n",
			"proc/self/mountinfo":          "29 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"sys/fs/cgroup/cpu.max":        "max 100000\n",
			"sys/fs/cgroup/abcdef/cpu.max": "100000 100000\n",
			"sys/fs/cgroup/def/cpu.max":    "100000 100000\n",
		}, 0, false},
		{"escaped mount point", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"proc/self/mountinfo":      `29 23 0:26 / /sys/fs/my\040cgroup rw - cgroup2 cgroup2 rw` + "\n",
			"sys/fs/my cgroup/cpu.max": "100000 50000\n",
		}, 2, true},
		{"garbage quota is no quota", map[string]string{
			"proc/self/cgroup":      "0::/\n",
			"proc/self/mountinfo":   v2Mount,
			"sys/fs/cgroup/cpu.max": "lots\n",
		}, 0, false},
		{"no proc files", map[string]string{"sys/fs/cgroup/cpu.max": "100000 100000\n"}, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Quota(os.DirFS(writeTree(t, c.files)), "self")
			if got != c.want || ok != c.wantOK {
				t.Fatalf("Quota = %d, %v; want %d, %v", got, ok, c.want, c.wantOK)
			}
		})
	}
}

func TestCountCPUList(t *testing.T) {
	for in, want := range map[string]int{"0": 1, "0-1": 2, "0-3,8,10-11": 7} {
		if got, err := countCPUList(in); err != nil || got != want {
			t.Errorf("countCPUList(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "3-1", "0-"} {
		if _, err := countCPUList(bad); err == nil {
			t.Errorf("countCPUList(%q) took it", bad)
		}
	}
}

// TestUsableHere checks the real call against tools that read the same
// kernel state another way: nproc counts the affinity mask, and Go's own
// runtime sizes GOMAXPROCS from the affinity mask and the cgroup quota.
func TestUsableHere(t *testing.T) {
	got := Usable()
	out, err := exec.Command("nproc").Output()
	if err != nil {
		t.Fatalf("nproc: %v", err)
	}
	nproc, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("nproc printed %q", out)
	}
	if q, ok := Quota(os.DirFS("/"), "self"); ok {
		t.Logf("cgroup quota here: %d CPUs", q)
		nproc = min(nproc, q)
	}
	if got != nproc {
		t.Fatalf("Usable() = %d, nproc and the cgroup quota say %d", got, nproc)
	}
	// Go rounds a quota up too but never below 2; compare where that rule
	// cannot differ.
	if os.Getenv("GOMAXPROCS") == "" && got >= 2 {
		if g := runtime.GOMAXPROCS(0); g != got {
			t.Fatalf("Usable() = %d, Go's runtime chose GOMAXPROCS %d", got, g)
		}
	}
	t.Logf("usable cores here: %d", got)
}

// TestUsableUnderTaskset runs this test binary again pinned to CPU 0 and
// checks that the child counts one usable core.
func TestUsableUnderTaskset(t *testing.T) {
	if os.Getenv("CORES_PRINT_USABLE") == "1" {
		os.Stdout.WriteString("usable=" + strconv.Itoa(Usable()) + "\n")
		return
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Skip("taskset (util-linux) not installed")
	}
	cmd := exec.Command(taskset, "-c", "0", os.Args[0], "-test.run", "^TestUsableUnderTaskset$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CORES_PRINT_USABLE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "usable=1\n") {
		t.Fatalf("child pinned to CPU 0 printed:\n%s", out)
	}
}
