# Build and install lockmgr for any distribution: make && make install [DESTDIR=...] [PREFIX=...]
#
# Debian and its derivatives: build the packages instead (debian/, see README.md):
#     dpkg-buildpackage -b -us -uc    (or: make deb)
#
# What goes where (override any variable on the command line):
#   $(SBINDIR)/lockmgrd, $(SBINDIR)/fence_lockmgr_watchdog, $(BINDIR)/lockmgr
#   $(LOCKDRIVERDIR)/file.so, dlm.so     libvirt's lock-driver directory: libvirt's own, whatever
#                                        PREFIX is (pkg-config libvirt), as libvirt only looks there
#   $(SYSCONFDIR)/libvirt/qemu-file.conf, qemu-dlm.conf    (kept if they exist)
#   $(SYSCONFDIR)/default/lockmgrd, lockmgrd-dlm           (kept if they exist)
#   $(SYSTEMDUNITDIR)/lockmgrd.service, lockmgrd-dlm.service
#   $(MANDIR)/man8, man5; $(AUGEASDIR), $(AUGEASDIR)/tests; $(DOCDIR)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/lockmgr
AUGEASDIR ?= $(DATADIR)/augeas/lenses
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
LIBVIRT_LIBDIR := $(shell pkg-config --variable=libdir libvirt 2>/dev/null)
LOCKDRIVERDIR ?= $(if $(LIBVIRT_LIBDIR),$(LIBVIRT_LIBDIR),$(PREFIX)/lib)/libvirt/lock-driver

CARGO ?= cargo
CARGO_FLAGS ?= --release --locked
# cargo's output directory (the workspace's target/ unless CARGO_TARGET_DIR says otherwise)
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
RELEASE := $(TARGET_DIR)/release
MAN_DIR := $(TARGET_DIR)/man

INSTALL ?= install

.PHONY: all build man install uninstall deb check-dist

all: build man

build:
	$(CARGO) build $(CARGO_FLAGS) -p lockmgrd -p lockmgr-plugin-file -p lockmgr-plugin-dlm

# The man pages, generated from lockmgrd's and lockmgr's command lines and from the shipped
# configuration files (xtask/).
man:
	$(CARGO) run $(CARGO_FLAGS) -q -p lockmgr-xtask -- man $(MAN_DIR) >/dev/null

install:
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LOCKDRIVERDIR)
	$(INSTALL) -m 0755 $(RELEASE)/lockmgrd $(DESTDIR)$(SBINDIR)/lockmgrd
	$(INSTALL) -m 0755 $(RELEASE)/lockmgr $(DESTDIR)$(BINDIR)/lockmgr
	$(INSTALL) -m 0755 daemon/fence_lockmgr_watchdog $(DESTDIR)$(SBINDIR)/fence_lockmgr_watchdog
	# libvirt loads <dir>/NAME.so for lock_manager = "NAME": no "lib" prefix
	$(INSTALL) -m 0644 $(RELEASE)/libfile.so $(DESTDIR)$(LOCKDRIVERDIR)/file.so
	$(INSTALL) -m 0644 $(RELEASE)/libdlm_plugin.so $(DESTDIR)$(LOCKDRIVERDIR)/dlm.so
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/libvirt $(DESTDIR)$(SYSCONFDIR)/default
	for f in qemu-file.conf qemu-dlm.conf; do \
	    [ -e $(DESTDIR)$(SYSCONFDIR)/libvirt/$$f ] || \
	    $(INSTALL) -m 0644 dist/$$f $(DESTDIR)$(SYSCONFDIR)/libvirt/$$f; done
	for f in lockmgrd lockmgrd-dlm; do \
	    [ -e $(DESTDIR)$(SYSCONFDIR)/default/$$f ] || \
	    $(INSTALL) -m 0644 dist/default/$$f $(DESTDIR)$(SYSCONFDIR)/default/$$f; done
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for f in lockmgrd.service lockmgrd-dlm.service; do \
	    sed -e 's|/usr/sbin/lockmgrd|$(SBINDIR)/lockmgrd|' \
	        -e 's|/etc/|$(SYSCONFDIR)/|g' dist/systemd/$$f >$(DESTDIR)$(SYSTEMDUNITDIR)/$$f; \
	    chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$f; done
	$(INSTALL) -d $(DESTDIR)$(AUGEASDIR)/tests
	$(INSTALL) -m 0644 dist/augeas/lockmgr_file.aug dist/augeas/lockmgr_dlm.aug $(DESTDIR)$(AUGEASDIR)/
	$(INSTALL) -m 0644 dist/augeas/tests/test_lockmgr_file.aug dist/augeas/tests/test_lockmgr_dlm.aug $(DESTDIR)$(AUGEASDIR)/tests/
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0644 $(MAN_DIR)/lockmgrd.8 $(MAN_DIR)/lockmgr.8 $(MAN_DIR)/fence_lockmgr_watchdog.8 $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 0644 $(MAN_DIR)/qemu-file.conf.5 $(MAN_DIR)/qemu-dlm.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)
	$(INSTALL) -m 0644 README.md docs/lockmgrd.md docs/dlm.md docs/configuration.md $(DESTDIR)$(DOCDIR)/

# Leaves the configuration files in $(SYSCONFDIR) (as a package removal does).
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/lockmgrd $(DESTDIR)$(SBINDIR)/fence_lockmgr_watchdog $(DESTDIR)$(BINDIR)/lockmgr
	rm -f $(DESTDIR)$(LOCKDRIVERDIR)/file.so $(DESTDIR)$(LOCKDRIVERDIR)/dlm.so
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/lockmgrd.service $(DESTDIR)$(SYSTEMDUNITDIR)/lockmgrd-dlm.service
	rm -f $(DESTDIR)$(AUGEASDIR)/lockmgr_file.aug $(DESTDIR)$(AUGEASDIR)/lockmgr_dlm.aug
	rm -f $(DESTDIR)$(AUGEASDIR)/tests/test_lockmgr_file.aug $(DESTDIR)$(AUGEASDIR)/tests/test_lockmgr_dlm.aug
	rm -f $(DESTDIR)$(MANDIR)/man8/lockmgrd.8 $(DESTDIR)$(MANDIR)/man8/lockmgr.8 $(DESTDIR)$(MANDIR)/man8/fence_lockmgr_watchdog.8
	rm -f $(DESTDIR)$(MANDIR)/man5/qemu-file.conf.5 $(DESTDIR)$(MANDIR)/man5/qemu-dlm.conf.5
	rm -rf $(DESTDIR)$(DOCDIR)

# The Debian packages, into $(TARGET_DIR)/debian/ (tests/package/run.sh also lints and installs them).
deb:
	tests/package/run.sh --build-only

# The lenses' own tests (tests/package/run.sh also checks the installed units and lenses).
check-dist:
	augparse -I dist/augeas dist/augeas/tests/test_lockmgr_file.aug
	augparse -I dist/augeas dist/augeas/tests/test_lockmgr_dlm.aug
