(* Tests of lockmgr_file.aug: every setting of qemu-file.conf, as in the shipped file with its
   commented-out values made live (see qemu-file.conf(5)). Run: augparse tests/test_lockmgr_file.aug *)
module Test_lockmgr_file =
   let conf = "auto_disk_leases = 1
require_lease_for_disks = 0
file_lockspace_dir = \"/var/lib/libvirt/lockd/files\"
socket_path = \"/run/lockmgr/file.sock\"
state_dir = \"/run/lockmgr/file-state\"
"

   test Lockmgr_file.lns get conf =
{ "auto_disk_leases" = "1" }
{ "require_lease_for_disks" = "0" }
{ "file_lockspace_dir" = "/var/lib/libvirt/lockd/files" }
{ "socket_path" = "/run/lockmgr/file.sock" }
{ "state_dir" = "/run/lockmgr/file-state" }

   (* The shipped layout: comment blocks, blank lines, commented-out settings. *)
   let shipped = "#
# Lock every disk of a domain automatically.
#
#auto_disk_leases = 1

  auto_disk_leases = 0
"

   test Lockmgr_file.lns get shipped =
{ "#comment" = "" }
{ "#comment" = "Lock every disk of a domain automatically." }
{ "#comment" = "" }
{ "#comment" = "auto_disk_leases = 1" }
{ "#empty" }
{ "auto_disk_leases" = "0" }

   test Lockmgr_file.lns put "#file_lockspace_dir = \"/x\"\n" after
      set "file_lockspace_dir" "/srv/nfs/lockmgr"
   = "#file_lockspace_dir = \"/x\"\nfile_lockspace_dir = \"/srv/nfs/lockmgr\"\n"

   test Lockmgr_file.lns put "socket_path = \"/run/lockmgr/file.sock\"\n" after
      set "socket_path" "/run/lockmgr/other.sock"
   = "socket_path = \"/run/lockmgr/other.sock\"\n"

   (* What the plugin refuses, the lens refuses: a boolean that is not 0 or 1, an unquoted
      string, and a key of the other plugin. *)
   test Lockmgr_file.lns get "auto_disk_leases = 2\n" = *
   test Lockmgr_file.lns get "file_lockspace_dir = /srv/locks\n" = *
   test Lockmgr_file.lns get "lockspace_name = \"libvirt\"\n" = *
