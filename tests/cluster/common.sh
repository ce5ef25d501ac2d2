# Sourced by tests/cluster/run-*.sh (bash): what every cluster run checks before and after.
#   preflight             goes to the repository's root, fails unless root with /dev/net/tun
#                         and the host tools the image build and the nodes need, and notes the
#                         start time ($start) and the test bed's namespaces ($namespaces_before)
#   fail MESSAGE          prints "<script>: MESSAGE" and exits 1
#   testbed_namespaces    the test bed's network namespaces now (lockmgr-<owner pid>-<n>), sorted
#   left_behind           those that appeared since preflight and whose owner is gone: another
#                         run going on meanwhile owns the ones whose owner still runs

fail() { echo "$(basename "$0"): $*" >&2; exit 1; }

preflight() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    [ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, tap devices, debootstrap)"
    [ -c /dev/net/tun ] || fail "/dev/net/tun is missing: QEMU cannot create tap devices"
    local tool
    for tool in qemu-system-x86_64 ip debootstrap cpio depmod apt-get pkg-config; do
        command -v "$tool" >/dev/null || fail "missing '$tool' (see .ci/install-deps.sh)"
    done
    start=$(date +%s)
    namespaces_before=$(testbed_namespaces)
}

testbed_namespaces() { ip netns list | awk '/^lockmgr-/ { print $1 }' | sort; }

left_behind() {
    comm -13 <(echo "$namespaces_before") <(testbed_namespaces) |
        while read -r ns; do owner=${ns#lockmgr-}; [ -d "/proc/${owner%%-*}" ] || echo "$ns"; done
}
