# pylvs: make demo (a NAT lab driven end to end), make test (install what is missing,
# then run every test), make bench, make lint.
# On a fresh Debian 12 machine, as root, `make test` installs its apt packages and a
# virtual environment by itself; a second run skips what is already installed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.pylvs-installed
XDP_OBJECT := pylvs/dataplane/io/xdp_pylvs.o

# Build tools, the libraries netfilterqueue builds against, and the tools the netns
# tests and labs drive (ip, nft, iptables-nft, sysctl, ping, curl), netbase for
# /etc/services (lvs.cf ports may be service names), libbpf and clang for --io afxdp,
# prometheus for its promtool and a real server scraping --metrics (tests/netns/test_metrics_lab.py
# starts its own in a lab namespace), chromium for the web tool's browser tests (Playwright
# drives Debian's build; no browser download), vsftpd for the FTP tests (tests/netns/test_ftp_lab.py
# starts its own on the lab's real servers).  On a host running systemd, the packages' postinst
# enables and starts prometheus.service on :9090 and vsftpd.service on :21 in the root namespace,
# which nothing here uses: a vsftpd installed here is stopped and disabled at once (an FTP
# login on the router is not something to leave behind); for prometheus `systemctl disable
# --now prometheus` after the install, or install where /usr/sbin/policy-rc.d exits 101
# (container images have one), which forbids the start.
APT_PACKAGES := build-essential python3-dev python3-venv pkg-config \
	libnetfilter-queue-dev libmnl-dev libnfnetlink-dev libbpf-dev clang-14 \
	iproute2 nftables iptables procps iputils-ping curl netbase tcpdump prometheus chromium vsftpd

.PHONY: test test-unit test-netns test-afxdp demo deps apt-deps bench bench-forward bench-failover bench-cold-start lint clean

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: deps
	$(PY) -m pytest --ignore=tests/netns $(PYTEST_ARGS)

test-netns: deps
	$(PY) -m pytest tests/netns $(PYTEST_ARGS)

# The end-to-end tests again with every lab director on AF_XDP (--io afxdp) where they
# do not name their adapter (pylvs.lab.director.LAB_IO); test_afxdp.py runs in `make test`.
AFXDP_E2E := tests/netns/test_director_e2e.py tests/netns/test_health_e2e.py tests/netns/test_ha_e2e.py \
	tests/netns/test_syncd_lab.py
test-afxdp: deps
	PYLVS_LAB_IO=afxdp $(PY) -m pytest $(AFXDP_E2E) $(PYTEST_ARGS)

# The NAT lab, the director from examples/lvs.cf.lab-nat-demo, bounded client traffic,
# the per-server distribution and the ipvsadm -L -n table; removes everything after.
demo: deps
	$(PY) -m pylvs.demo $(DEMO_ARGS)

bench: deps
	$(PY) -m pytest bench --benchmark-only $(PYTEST_ARGS)

# The forwarding benchmark (bench/forward): kernel forwarding, nftables DNAT, HAProxy and
# pylvs in one lab, interleaved runs, medians, ratios; its own load generators and
# reference forwarders come from apt.  As root, e.g. BENCH_FORWARD_ARGS="--quick".
BENCH_FORWARD_APT := wrk iperf3 haproxy nginx-light build-essential
BENCH_FORWARD_ARGS ?=

bench-forward: deps
	@$(MAKE) --no-print-directory apt-deps APT_PACKAGES="$(BENCH_FORWARD_APT)"
	$(PY) -m bench.forward $(BENCH_FORWARD_ARGS)

# The failover benchmark (bench/failover): two routers running pylvs pulse in a NAT lab,
# the active one SIGKILLed, time to the first new connection through the VIP and
# established connections lost (sync on); pulse's defaults and keepalive 0.2 / deadtime
# 0.6, 5 runs each.  As root, e.g. BENCH_FAILOVER_ARGS="--runs 1 --settings fast".
BENCH_FAILOVER_ARGS ?= --runs 5

bench-failover: deps
	$(PY) -m bench.failover $(BENCH_FAILOVER_ARGS)

# Cold start (bench/cold_start.py): `pylvs lvs` start to the first connection forwarded
# through the VIP, with an empty numba cache and with the cache `make deps` leaves.  As root.
bench-cold-start: deps
	$(PY) -m bench.cold_start

lint: deps
	$(PY) -m pip install -q ruff
	$(PY) -m ruff check pylvs tests bench

# deps ends by compiling every numba kernel into its cache (pylvs.precompile): once after
# an install or a source change, a few seconds of loading otherwise, so a first
# `pylvs lvs` forwards within seconds instead of compiling for a minute.
deps: apt-deps $(PIP_STAMP) $(XDP_OBJECT)
	@$(PY) -m pylvs.precompile

# The XDP program of --io afxdp (csrc/bpf), for the BPF target; libbpf loads it at start.
$(XDP_OBJECT): csrc/bpf/xdp_pylvs.c csrc/bpf/xdp_pylvs.h | apt-deps
	clang-14 -O2 -g -Wall -target bpf -I/usr/include/$$(gcc -dumpmachine) -c $< -o $@

# Install only the packages dpkg does not already have.
apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing$(APT_AFTER); \
	fi
# After the test packages: a vsftpd installed just now is stopped and disabled under systemd
# (the install's own packages, BUILD_APT_PACKAGES, start no daemon: nothing to run then).
APT_AFTER = $(if $(filter vsftpd,$(APT_PACKAGES)), && \
		if printf '%s\n' $$missing | grep -qx vsftpd && [ -d /run/systemd/system ]; then \
			$$SUDO systemctl disable --now vsftpd; \
		fi)

# python3-venv comes from apt on Debian, so the venv waits for apt-deps (also under -j).
$(VENV)/bin/python: | apt-deps
	$(PYTHON) -m venv $(VENV)

# Re-run pip only when the package definition or the C helpers change.
$(PIP_STAMP): $(VENV)/bin/python pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h csrc/*.py csrc/bpf/*.h)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info pylvs/_native.* $(XDP_OBJECT) .pytest_cache .hypothesis

# ---- make install: the package in a virtual environment of its own (dh-virtualenv's way),
# /usr/sbin/pylvs, the systemd units, the man pages, /etc/default/pylvs and an example
# lvs.cf (docs/service.md).  DESTDIR stages it (packaging, tests): the files inside name
# PREFIX, never DESTDIR.  An existing /etc/default/pylvs or lvs.cf is never overwritten.
#   sudo make install                          # /opt/pylvs, /usr/sbin/pylvs, units, pages
#   make install DESTDIR=/tmp/stage            # the same tree under /tmp/stage
#   make install-files DESTDIR=/tmp/stage      # all but the environment: seconds, no pip
# It runs no systemctl; afterwards: systemctl daemon-reload && systemctl enable --now
# pylvs-pulse (or pylvs-lvs on a director without a backup router).
PREFIX     ?= /opt/pylvs
SBINDIR    ?= /usr/sbin
UNITDIR    ?= /lib/systemd/system
MANDIR     ?= /usr/share/man
SYSCONFDIR ?= /etc
DOCDIR     ?= /usr/share/doc/pylvs
EXAMPLE_LVS_CF ?= examples/lvs.cf.nat-wlc
INSTALL_PIP_ARGS ?=
# The environment's bin/python links to this interpreter, so it must be the system's
# (Debian's python3 package, as dh-virtualenv requires), not a pyenv or a .venv one.
INSTALL_PYTHON ?= /usr/bin/python3
# What building the package needs (pip compiles pylvs._native, clang the XDP program).
BUILD_APT_PACKAGES := build-essential python3-dev python3-venv pkg-config \
	libnetfilter-queue-dev libmnl-dev libnfnetlink-dev libbpf-dev clang-14
# The python that writes the man pages: the .venv of make test for install-files, the
# installed environment's for install.
MANPAGE_PYTHON ?= $(PY)
DEST = $(if $(DESTDIR),$(abspath $(DESTDIR)),)
VENV_DEST = $(DEST)$(PREFIX)

.PHONY: install install-venv install-files

# The web tool's user (pylvs web drops to it; docs/web.md), as a package's postinst would
# add it; not when staging into DESTDIR.
WEB_USER ?= pylvs-web

install: install-venv
	@$(MAKE) --no-print-directory install-files MANPAGE_PYTHON=$(VENV_DEST)/bin/python
	if [ -z "$(DEST)" ] && ! getent passwd $(WEB_USER) > /dev/null; then \
		useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $(WEB_USER); \
	fi
	@echo "pylvs installed in $(DEST)$(PREFIX); then: systemctl daemon-reload && systemctl enable --now pylvs-pulse"

# Build from a copy of the working tree, so pip's in-tree build leaves this one alone;
# the XDP object is not package data, so it is copied beside afxdp.py; the numba kernels
# are compiled into the environment's cache so the first start forwards in seconds
# (python -P: the installed package, not this tree, which is the current directory); then,
# as dh-virtualenv does, DESTDIR is taken out of the scripts' shebangs, the activate
# scripts and pyvenv.cfg (compiled .pyc files keep it, and Python corrects it on import).
install-venv:
	@$(MAKE) --no-print-directory apt-deps $(XDP_OBJECT) APT_PACKAGES="$(BUILD_APT_PACKAGES)"
	$(INSTALL_PYTHON) -m venv $(VENV_DEST)
	src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && \
	tar -c --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
		--exclude='./pylvs/_native*' --exclude=__pycache__ --exclude=./.pytest_cache \
		--exclude=./.hypothesis --exclude=./.benchmarks . | tar -x -C "$$src" && \
	$(VENV_DEST)/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore \
		$(INSTALL_PIP_ARGS) "$$src"
	install -m 644 $(XDP_OBJECT) \
		"$$($(VENV_DEST)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pylvs/dataplane/io/"
	$(VENV_DEST)/bin/python -P -m pylvs.precompile
	if [ -n "$(DEST)" ]; then \
		grep -rlIZF "$(VENV_DEST)" $(VENV_DEST)/bin $(VENV_DEST)/pyvenv.cfg | \
		xargs -0 -r sed -i "s|$(VENV_DEST)|$(PREFIX)|g"; \
	fi
	install -d $(DEST)$(SBINDIR)
	ln -sfn $(PREFIX)/bin/pylvs $(DEST)$(SBINDIR)/pylvs
	ln -sfn $(PREFIX)/bin/pylvsadm $(DEST)$(SBINDIR)/pylvsadm

# The units name /usr/sbin/pylvs, /etc/default/pylvs and /etc/sysconfig/ha/lvs.cf;
# other SBINDIR or SYSCONFDIR values are written into the installed copies.
install-files:
	install -d $(DEST)$(UNITDIR) $(DEST)$(SYSCONFDIR)/default $(DEST)$(SYSCONFDIR)/sysconfig/ha \
		$(DEST)$(DOCDIR)/examples
	for unit in systemd/*.service; do \
		sed -e 's|/usr/sbin/pylvs|$(SBINDIR)/pylvs|g' -e 's|/etc/default/pylvs|$(SYSCONFDIR)/default/pylvs|g' \
			-e 's|/etc/sysconfig/ha/|$(SYSCONFDIR)/sysconfig/ha/|g' "$$unit" > $(DEST)$(UNITDIR)/$${unit##*/} && \
		chmod 644 $(DEST)$(UNITDIR)/$${unit##*/} || exit 1; \
	done
	[ -e $(DEST)$(SYSCONFDIR)/default/pylvs ] || install -m 644 systemd/pylvs.default $(DEST)$(SYSCONFDIR)/default/pylvs
	[ -e $(DEST)$(SYSCONFDIR)/sysconfig/ha/lvs.cf ] || \
		install -m 644 $(EXAMPLE_LVS_CF) $(DEST)$(SYSCONFDIR)/sysconfig/ha/lvs.cf
	install -m 644 examples/README.md examples/lvs.cf.* $(DEST)$(DOCDIR)/examples/
	pages=$$(mktemp -d) && trap 'rm -rf "$$pages"' EXIT && \
	$(MANPAGE_PYTHON) -P -m pylvs.manpages "$$pages" > /dev/null && \
	for page in "$$pages"/*; do \
		name=$${page##*/}; section=$${name##*.}; \
		install -d $(DEST)$(MANDIR)/man$$section && \
		gzip -9n -c "$$page" > $(DEST)$(MANDIR)/man$$section/$$name.gz && \
		chmod 644 $(DEST)$(MANDIR)/man$$section/$$name.gz || exit 1; \
	done
