(* /etc/libvirt/qemu-file.conf: lockmgr's file.so and its daemon, lockmgrd; see qemu-file.conf(5).
   Modelled on libvirt's libvirt_lockd.aug. Every key the plugin reads, and no other. *)

module Lockmgr_file =
   autoload xfm

   let eol   = del /[ \t]*\n/ "\n"
   let value_sep   = del /[ \t]*=[ \t]*/  " = "
   let indent = del /[ \t]*/ ""

   (* libvirt strings have no escape sequences. As in libvirt's own lenses, only "double"
      quotes: a value in 'single' quotes is valid for libvirt and lockmgr but not for this lens. *)
   let str_val = del /\"/ "\"" . store /[^\"\n]*/ . del /\"/ "\""
   let bool_val = store /0|1/

   let str_entry       (kw:string) = [ key kw . value_sep . str_val ]
   let bool_entry      (kw:string) = [ key kw . value_sep . bool_val ]

   let entry = bool_entry "auto_disk_leases"
             | bool_entry "require_lease_for_disks"
             | str_entry "file_lockspace_dir"
             | str_entry "socket_path"
             | str_entry "state_dir"

   let comment = [ label "#comment" . del /#[ \t]*/ "# " .  store /([^ \t\n][^\n]*)?/ . del /\n/ "\n" ]
   let empty = [ label "#empty" . eol ]

   let record = indent . entry . eol

   let lns = ( record | comment | empty ) *

   let filter = incl "/etc/libvirt/qemu-file.conf"
              . Util.stdexcl

   let xfm = transform lns filter
