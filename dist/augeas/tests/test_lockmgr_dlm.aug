(* Tests of lockmgr_dlm.aug: every setting of qemu-dlm.conf, as in the shipped file with its
   commented-out values made live (see qemu-dlm.conf(5)). Run: augparse tests/test_lockmgr_dlm.aug *)
module Test_lockmgr_dlm =
   let conf = "auto_disk_leases = 1
require_lease_for_disks = 0
lockspace_name = \"libvirt\"
socket_path = \"/run/lockmgr/dlm.sock\"
state_dir = \"/run/lockmgr/dlm-state\"
"

   test Lockmgr_dlm.lns get conf =
{ "auto_disk_leases" = "1" }
{ "require_lease_for_disks" = "0" }
{ "lockspace_name" = "libvirt" }
{ "socket_path" = "/run/lockmgr/dlm.sock" }
{ "state_dir" = "/run/lockmgr/dlm-state" }

   (* The shipped layout: comment blocks, blank lines, commented-out settings. *)
   let shipped = "#
# The DLM lockspace.
#
#lockspace_name = \"libvirt\"

lockspace_name = \"vms\"
"

   test Lockmgr_dlm.lns get shipped =
{ "#comment" = "" }
{ "#comment" = "The DLM lockspace." }
{ "#comment" = "" }
{ "#comment" = "lockspace_name = \"libvirt\"" }
{ "#empty" }
{ "lockspace_name" = "vms" }

   test Lockmgr_dlm.lns put "lockspace_name = \"libvirt\"\n" after
      set "lockspace_name" "vms"
   = "lockspace_name = \"vms\"\n"

   (* What the plugin refuses, the lens refuses: a boolean that is not 0 or 1, an unquoted
      string, and a key of the other plugin. *)
   test Lockmgr_dlm.lns get "require_lease_for_disks = yes\n" = *
   test Lockmgr_dlm.lns get "lockspace_name = vms\n" = *
   test Lockmgr_dlm.lns get "file_lockspace_dir = \"/x\"\n" = *
