// Package cores tells how many CPUs this process may really use: the CPUs
// its affinity mask allows, lowered to the CPU quota of its cgroup (v2
// cpu.max or v1 cpu.cfs_quota_us), rounded up.
//
// ONNX Runtime left to itself (intra-op threads 0) sizes its pool from the
// machine and pins the threads to cores; on a 2-core box shared with other
// processes that ran the graphs about half as fast as an explicit thread
// count (docs/benchmarks.md, "Threads"). So htcstream asks for an explicit
// count, and this is where the count comes from.
package cores

import (
	"bufio"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Usable returns the number of CPUs this process may use, at least 1: the
// CPUs in its affinity mask, lowered to its cgroup's CPU quota (rounded up).
// Anything it cannot read counts as no limit, so the answer falls back to
// the affinity count and then to the online CPUs.
func Usable() int {
	n := affinity()
	if q, ok := Quota(os.DirFS("/"), "self"); ok {
		n = min(n, q)
	}
	return max(n, 1)
}

// affinity counts the CPUs in this process's affinity mask
// (sched_getaffinity), or the CPUs online when the mask cannot be read.
func affinity() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		if c := set.Count(); c > 0 {
			return c
		}
	}
	n, err := onlineCPUs()
	if err != nil || n < 1 {
		return 1
	}
	return n
}

func onlineCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0, err
	}
	return countCPUList(strings.TrimSpace(string(b)))
}

// countCPUList counts a kernel CPU list such as "0-3,8,10-11".
func countCPUList(s string) (int, error) {
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("cpu list %q: %w", s, err)
			}
		}
		if b < a {
			return 0, fmt.Errorf("cpu list %q: range %s runs backwards", s, part)
		}
		n += b - a + 1
	}
	return n, nil
}

// Quota returns the CPU quota, in whole CPUs rounded up, that the cgroups of
// process pid ("self" or a number) impose, reading proc/PID/cgroup,
// proc/PID/mountinfo and the cgroup files below root (the file system root in
// use, a test directory in tests). ok is false when no quota applies or none
// can be read. A quota set on an ancestor cgroup limits its descendants too,
// so every level from the process's cgroup up to the mount's root counts and
// the smallest wins.
func Quota(root fs.FS, pid string) (cpus int, ok bool) {
	cgs, err := readCgroups(root, pid)
	if err != nil {
		return 0, false
	}
	mounts, err := readMounts(root, pid)
	if err != nil {
		return 0, false
	}
	best := math.Inf(1)
	for _, m := range mounts {
		rel, found := cgs[m.hierarchyKey()]
		if !found {
			continue
		}
		for _, dir := range m.dirs(rel) {
			if q, ok := m.quotaIn(root, dir); ok && q < best {
				best = q
			}
		}
	}
	if math.IsInf(best, 1) {
		return 0, false
	}
	return max(int(math.Ceil(best-1e-9)), 1), true
}

// readCgroups maps each hierarchy of proc/PID/cgroup to the process's path in
// it: "" for the v2 unified hierarchy (line "0::/path"), "cpu" for the v1
// hierarchy that holds the cpu controller (line "N:cpu,cpuacct:/path").
func readCgroups(root fs.FS, pid string) (map[string]string, error) {
	f, err := root.Open(path.Join("proc", pid, "cgroup"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 3)
		if len(fields) != 3 {
			continue
		}
		if fields[0] == "0" && fields[1] == "" {
			out[""] = fields[2]
			continue
		}
		for _, c := range strings.Split(fields[1], ",") {
			if c == "cpu" {
				out["cpu"] = fields[2]
			}
		}
	}
	return out, sc.Err()
}

// mount is one cgroup file system mounted in the process's mount namespace.
type mount struct {
	v2         bool
	root       string // the cgroup path mounted (mountinfo field 4)
	mountPoint string // where (field 5), without the leading slash
}

func (m mount) hierarchyKey() string {
	if m.v2 {
		return ""
	}
	return "cpu"
}

// dirs lists the directories, below the mount point, of the cgroup at rel
// (a path in the hierarchy) and of each of its ancestors visible in the
// mount. Inside a container the mount's root is the container's own cgroup
// and rel starts with it; a rel outside the mount root (a cgroup namespace
// shows "/" or "/..") leaves only the mount point itself.
func (m mount) dirs(rel string) []string {
	rel = path.Clean("/" + rel)
	sub, found := strings.CutPrefix(rel, m.root)
	if m.root == "/" {
		sub, found = rel, true
	}
	// "/docker/abcdef" does not lie below a mount of "/docker/abc".
	if found && sub != "" && !strings.HasPrefix(sub, "/") {
		found = false
	}
	if !found || strings.HasPrefix(sub, "/..") {
		sub = "/"
	}
	var out []string
	for p := path.Clean("/" + sub); ; p = path.Dir(p) {
		out = append(out, path.Join(m.mountPoint, p))
		if p == "/" {
			return out
		}
	}
}

// quotaIn reads the quota, in CPUs, set in one cgroup directory.
func (m mount) quotaIn(root fs.FS, dir string) (float64, bool) {
	if m.v2 {
		b, err := fs.ReadFile(root, path.Join(dir, "cpu.max"))
		if err != nil {
			return 0, false
		}
		quota, period, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		return ratio(quota, period)
	}
	q, err := fs.ReadFile(root, path.Join(dir, "cpu.cfs_quota_us"))
	if err != nil {
		return 0, false
	}
	p, err := fs.ReadFile(root, path.Join(dir, "cpu.cfs_period_us"))
	if err != nil {
		return 0, false
	}
	return ratio(strings.TrimSpace(string(q)), strings.TrimSpace(string(p)))
}

// ratio is quota/period; "max" (v2) and a negative quota (v1's -1) mean no
// limit.
func ratio(quota, period string) (float64, bool) {
	if quota == "max" {
		return 0, false
	}
	q, err := strconv.ParseInt(quota, 10, 64)
	if err != nil || q <= 0 {
		return 0, false
	}
	p, err := strconv.ParseInt(period, 10, 64)
	if err != nil || p <= 0 {
		return 0, false
	}
	return float64(q) / float64(p), true
}

// readMounts finds the cgroup mounts in proc/PID/mountinfo: the v2 one
// (fstype cgroup2) and the v1 one holding the cpu controller (its super
// options name "cpu").
func readMounts(root fs.FS, pid string) ([]mount, error) {
	f, err := root.Open(path.Join("proc", pid, "mountinfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 0:30 /root /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
		pre, post, found := strings.Cut(sc.Text(), " - ")
		if !found {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 {
			continue
		}
		m := mount{root: unescape(pf[3]), mountPoint: strings.TrimPrefix(unescape(pf[4]), "/")}
		switch qf[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			if len(qf) < 3 || !hasOption(qf[2], "cpu") {
				continue
			}
		default:
			continue
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space and so on).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
