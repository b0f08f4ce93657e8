package broker

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCClient builds c/example_client.c against c/dmsb.h (whose static
// asserts pin every struct size) and runs it on a real session: the
// layout documented for C shim authors is the one the broker speaks.
func TestCClient(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	bin := filepath.Join(t.TempDir(), "client")
	if out, err := exec.Command("gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Ic", "-o", bin, "c/example_client.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	r := newRig(t, "")
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	f.Close()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	want := `hello status=0 domid=7 ndevices=1 device0=0x20
config_read status=0 value=0x10d38086
memory_mapping status=18 (EXDEV=18)
map_pirq status=0 pirq=100
unknown_op status=38 (ENOSYS=38)
`
	if string(out) != want {
		t.Fatalf("C client saw:\n%s\nwant:\n%s", out, want)
	}
	r.waitGone(s)
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("after the C client exited: %v", st.Summary())
	}
}
