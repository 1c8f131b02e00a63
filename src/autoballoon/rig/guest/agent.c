/*
 * autoballoon test-rig guest agent: the host's hands inside a test guest.
 *
 * Runs as the last step of the initramfs /init, reads one-line requests from the second serial port
 * (/dev/ttyS1, wired to a unix socket on the host) and answers each with one line carrying the
 * request's id, so that the host can tell its reply from a stale one of an earlier connection.
 *
 *   request:  <id> <command> [args...]\n
 *   reply:    <id> ok [payload]\n   or   <id> err <message>\n
 *
 * Commands: ping | alloc MIB [RATE_MIB_PER_S] | free MIB|all | held | meminfo | oomkills
 *           | cpuburn on|off | burncpu-when-ballooned on|off
 *           | grow MIB [RATE_MIB_PER_S] | shrink MIB|all | sample | app ARG [ARG] | appresult
 *
 * alloc and free wait until the hog holds its new target (tests use them); grow and shrink only move the
 * target and answer at once, so that a benchmark can keep sampling the guest while a workload plays.
 * sample answers one line of what the guest sees: /proc/meminfo (kB), /proc/vmstat counters, the
 * cumulative stall times of /proc/pressure/memory (us), and the hog's state.
 *
 * app starts the guest's application driver (APP_PATH, only in the production-like Debian guest) with up
 * to two arguments and answers at once; appresult answers the driver's last result line (APP_RESULT),
 * or err while it runs. The driver writes its result file whole (rename), so a reply is never partial.
 *
 * Memory is held by a separate child process (the "hog") so that an OOM kill in the guest takes the
 * hog, never this agent (the agent sets its own oom_score_adj to -1000, the hog to 1000). The tty is
 * opened once, switched to raw mode once, and read in one loop: re-opening it per line loses input.
 * Static build: gcc -static -O2 -o agent agent.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1024L * 1024L)
#define MAX_CHUNKS 65536
#define PAGE 4096L
#define LINE_MAX_LEN 4096
#define WAIT_LIMIT_S 120.0
#define HOG_IDLE_NS 10000000L
#define BURN_SLICE_NS 200000000L
#define APP_PATH "/usr/local/sbin/ab-app"
#define APP_RESULT "/run/ab-app.result"
#define APP_LOG "/run/ab-app.log"
#define APP_EXIT_WAIT_S 5.0

struct hog_state {
    volatile long target_mib; /* what the agent wants held */
    volatile long held_mib;   /* what the hog holds now */
    volatile long rate_mib_s; /* 0 = as fast as possible */
};

static struct hog_state *hog;
static pid_t hog_pid = -1;
static pid_t burn_pid = -1;
static pid_t burn_ballooned_pid = -1;
static pid_t app_pid = -1;
static long boot_memtotal_kb;
static int tty = -1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ns(long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        if (write(fd, text, strlen(text)) < 0) { /* best effort */ }
        close(fd);
    }
}

static long meminfo_kb(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char name[64];
    long value;
    long found = -1;
    if (!f) return -1;
    while (fscanf(f, "%63[^:]: %ld%*[^\n]\n", name, &value) == 2) {
        if (strcmp(name, key) == 0) { found = value; break; }
    }
    fclose(f);
    return found;
}

static void reply(const char *id, const char *fmt, ...) {
    char buf[LINE_MAX_LEN * 2];
    int n = snprintf(buf, sizeof buf, "%s ", id);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - n - 2, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(tty, buf + off, n - off);
        if (w < 0) { if (errno == EINTR) continue; return; }
        off += w;
    }
}

/* ---- the hog: holds memory in 1 MiB anonymous mappings, grows/shrinks toward target ---- */

static void hog_main(void) {
    static char *chunks[MAX_CHUNKS];
    write_file("/proc/self/oom_score_adj", "1000");
    double next = now_s();
    for (;;) {
        long held = hog->held_mib;
        long target = hog->target_mib;
        if (target > MAX_CHUNKS) target = MAX_CHUNKS;
        if (held < target) {
            long rate = hog->rate_mib_s;
            if (rate > 0) {
                double t = now_s();
                if (t < next) { sleep_ns((long)((next - t) * 1e9)); continue; }
                next = (next > t - 1.0 ? next : t) + 1.0 / rate;
            }
            char *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) { sleep_ns(HOG_IDLE_NS); continue; }
            /* Distinct content per page: a real working set, not zero pages the host could merge. */
            for (long off = 0; off < CHUNK; off += PAGE) {
                long v = (held << 8) ^ off ^ (long)getpid();
                memcpy(p + off, &v, sizeof v);
                p[off + sizeof v] = 1;
            }
            chunks[held] = p;
            hog->held_mib = held + 1;
        } else if (held > target) {
            munmap(chunks[held - 1], CHUNK);
            chunks[held - 1] = NULL;
            hog->held_mib = held - 1;
            next = now_s();
        } else {
            next = now_s();
            sleep_ns(HOG_IDLE_NS);
        }
    }
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == hog_pid) {
            hog_pid = -1;
            hog->held_mib = 0;
            hog->target_mib = 0;
        } else if (pid == burn_pid) {
            burn_pid = -1;
        } else if (pid == burn_ballooned_pid) {
            burn_ballooned_pid = -1;
        } else if (pid == app_pid) {
            app_pid = -1;
        }
    }
}

static int ensure_hog(void) {
    reap();
    if (hog_pid > 0) return 0;
    hog->held_mib = 0;
    hog->target_mib = 0;
    hog_pid = fork();
    if (hog_pid < 0) return -1;
    if (hog_pid == 0) { hog_main(); _exit(0); }
    return 0;
}

/* Wait until the hog holds its target; returns 0, or -1 if it died (OOM kill) or the wait timed out. */
static int wait_hog(void) {
    double deadline = now_s() + WAIT_LIMIT_S;
    while (now_s() < deadline) {
        reap();
        if (hog_pid < 0) return -1;
        if (hog->held_mib == hog->target_mib) return 0;
        sleep_ns(HOG_IDLE_NS);
    }
    return -1;
}

/* ---- CPU burners ---- */

static void burn_for_ns(long ns) {
    double end = now_s() + ns / 1e9;
    volatile unsigned long x = 0;
    while (now_s() < end) for (int i = 0; i < 100000; i++) x += i;
}

static pid_t spawn_burner(int only_when_ballooned) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    for (;;) {
        if (!only_when_ballooned) { burn_for_ns(BURN_SLICE_NS); continue; }
        long total = meminfo_kb("MemTotal");
        if (total > 0 && total < boot_memtotal_kb) burn_for_ns(BURN_SLICE_NS);
        else sleep_ns(BURN_SLICE_NS);
    }
}

static void stop_child(pid_t *pid) {
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = -1;
    }
}

static int set_switch(const char *id, const char *arg, pid_t *pid, int only_when_ballooned) {
    if (arg && strcmp(arg, "on") == 0) {
        if (*pid <= 0) *pid = spawn_burner(only_when_ballooned);
    } else if (arg && strcmp(arg, "off") == 0) {
        stop_child(pid);
    } else {
        reply(id, "err expected on or off, got %s", arg ? arg : "nothing");
        return -1;
    }
    reply(id, "ok %s", *pid > 0 ? "on" : "off");
    return 0;
}

/* ---- requests ---- */

static void cmd_meminfo(const char *id) {
    char out[LINE_MAX_LEN];
    int n = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char name[64];
    long value;
    if (!f) { reply(id, "err cannot read /proc/meminfo"); return; }
    while (fscanf(f, "%63[^:]: %ld%*[^\n]\n", name, &value) == 2 && n < (int)sizeof out - 80)
        n += snprintf(out + n, sizeof out - n, "%s%s=%ld", n ? " " : "", name, value);
    fclose(f);
    reply(id, "ok %s", out);
}

/* The value of `key` in a "name value" file like /proc/vmstat, or -1. */
static long vmstat_value(const char *key) {
    FILE *f = fopen("/proc/vmstat", "r");
    char name[64];
    long value;
    long found = -1;
    if (!f) return -1;
    while (fscanf(f, "%63s %ld\n", name, &value) == 2)
        if (strcmp(name, key) == 0) { found = value; break; }
    fclose(f);
    return found;
}

/* The cumulative stall time (us) of the "some" or "full" line of /proc/pressure/memory, or -1. */
static long psi_total_us(const char *kind) {
    FILE *f = fopen("/proc/pressure/memory", "r");
    char line[256];
    long found = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        char *total = strstr(line, "total=");
        if (strncmp(line, kind, strlen(kind)) == 0 && total) found = strtol(total + 6, NULL, 10);
    }
    fclose(f);
    return found;
}

/* Reclaimed or scanned pages, anon plus file (`kind` "pgsteal" or "pgscan"; Linux >= 5.8 splits them so),
 * or -1 when the kernel has neither. */
static long vmstat_anon_file(const char *kind) {
    char key[32];
    snprintf(key, sizeof key, "%s_anon", kind);
    long anon = vmstat_value(key);
    snprintf(key, sizeof key, "%s_file", kind);
    long file = vmstat_value(key);
    if (anon < 0 || file < 0) return -1;
    return anon + file;
}

/* Start the application driver in its own session, with the default OOM score (not the agent's -1000:
 * the application is what a guest's OOM killer may take). */
static void cmd_app(const char *id, const char *a1, const char *a2) {
    if (!a1) { reply(id, "err usage: app ARG [ARG]"); return; }
    /* A driver that has written its result is on its way out: the host may ask for the next run
     * before it has exited, so give it a moment to end instead of refusing. */
    double deadline = now_s() + APP_EXIT_WAIT_S;
    while (app_pid > 0 && access(APP_RESULT, F_OK) == 0 && now_s() < deadline) {
        reap();
        if (app_pid > 0) sleep_ns(HOG_IDLE_NS);
    }
    if (app_pid > 0) { reply(id, "err the application driver is still running (pid %d)", app_pid); return; }
    unlink(APP_RESULT);
    pid_t pid = fork();
    if (pid < 0) { reply(id, "err fork failed: %s", strerror(errno)); return; }
    if (pid == 0) {
        setsid();
        write_file("/proc/self/oom_score_adj", "0");
        int fd = open(APP_LOG, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        close(tty);
        execl(APP_PATH, APP_PATH, a1, a2, (char *)NULL);
        _exit(127);
    }
    app_pid = pid;
    reply(id, "ok pid=%d", pid);
}

static void cmd_appresult(const char *id) {
    char line[LINE_MAX_LEN];
    FILE *f = fopen(APP_RESULT, "r");
    if (!f && app_pid > 0) { reply(id, "err running"); return; }
    if (!f) {
        /* The driver ended without a result: answer the last line it wrote, which says why. */
        char last[LINE_MAX_LEN] = "";
        FILE *log = fopen(APP_LOG, "r");
        if (log) {
            while (fgets(line, sizeof line, log)) if (line[0] != '\n') snprintf(last, sizeof last, "%s", line);
            fclose(log);
        }
        last[strcspn(last, "\r\n")] = 0;
        reply(id, "err no result; the driver's last words: %s", last[0] ? last : "(none)");
        return;
    }
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    reply(id, "ok %s", line);
}

static void cmd_oomkills(const char *id) {
    long kills = vmstat_value("oom_kill");
    if (kills < 0) { reply(id, "err cannot read oom_kill from /proc/vmstat"); return; }
    reply(id, "ok %ld", kills);
}

static void cmd_sample(const char *id) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    reply(id,
          "ok t_ms=%ld mem_total_kb=%ld mem_available_kb=%ld mem_free_kb=%ld anon_kb=%ld cached_kb=%ld "
          "shmem_kb=%ld swap_total_kb=%ld "
          "swap_free_kb=%ld oom_kill=%ld pswpin=%ld pswpout=%ld pgmajfault=%ld psi_some_us=%ld "
          "psi_full_us=%ld held=%ld target=%ld alive=%d refault_anon=%ld refault_file=%ld pgsteal=%ld "
          "pgscan=%ld",
          ts.tv_sec * 1000L + ts.tv_nsec / 1000000L, meminfo_kb("MemTotal"), meminfo_kb("MemAvailable"),
          meminfo_kb("MemFree"), meminfo_kb("AnonPages"), meminfo_kb("Cached"), meminfo_kb("Shmem"),
          meminfo_kb("SwapTotal"), meminfo_kb("SwapFree"), vmstat_value("oom_kill"),
          vmstat_value("pswpin"), vmstat_value("pswpout"), vmstat_value("pgmajfault"), psi_total_us("some"),
          psi_total_us("full"), hog->held_mib, hog->target_mib, hog_pid > 0,
          vmstat_value("workingset_refault_anon"), vmstat_value("workingset_refault_file"),
          vmstat_anon_file("pgsteal"), vmstat_anon_file("pgscan"));
}

/* grow/shrink: move the hog's target and answer at once (see the header). */
static void cmd_grow(const char *id, const char *a1, const char *a2) {
    long mib = a1 ? strtol(a1, NULL, 10) : -1;
    long rate = a2 ? strtol(a2, NULL, 10) : 0;
    if (mib < 0 || rate < 0) { reply(id, "err usage: grow MIB [RATE_MIB_PER_S]"); return; }
    if (ensure_hog() < 0) { reply(id, "err fork failed: %s", strerror(errno)); return; }
    hog->rate_mib_s = rate;
    hog->target_mib += mib;
    reply(id, "ok held=%ld target=%ld", hog->held_mib, hog->target_mib);
}

static void cmd_shrink(const char *id, const char *a1) {
    if (a1 && strcmp(a1, "all") == 0) hog->target_mib = 0;
    else if (a1 && strtol(a1, NULL, 10) >= 0) {
        long t = hog->target_mib - strtol(a1, NULL, 10);
        hog->target_mib = t > 0 ? t : 0;
    } else { reply(id, "err usage: shrink MIB|all"); return; }
    reply(id, "ok held=%ld target=%ld", hog->held_mib, hog->target_mib);
}

static void handle(char *line) {
    char *save = NULL;
    char *id = strtok_r(line, " \t", &save);
    char *cmd = strtok_r(NULL, " \t", &save);
    char *a1 = strtok_r(NULL, " \t", &save);
    char *a2 = strtok_r(NULL, " \t", &save);
    if (!id) return;
    if (!cmd) { reply(id, "err empty request"); return; }
    reap();
    if (strcmp(cmd, "ping") == 0) {
        reply(id, "ok boot_memtotal_kb=%ld", boot_memtotal_kb);
    } else if (strcmp(cmd, "alloc") == 0) {
        long mib = a1 ? strtol(a1, NULL, 10) : -1;
        long rate = a2 ? strtol(a2, NULL, 10) : 0;
        if (mib < 0 || rate < 0) { reply(id, "err usage: alloc MIB [RATE_MIB_PER_S]"); return; }
        if (ensure_hog() < 0) { reply(id, "err fork failed: %s", strerror(errno)); return; }
        hog->rate_mib_s = rate;
        hog->target_mib += mib;
        if (rate > 0) { reply(id, "ok held=%ld target=%ld", hog->held_mib, hog->target_mib); return; }
        if (wait_hog() < 0) { reply(id, "err hog killed or stalled held=%ld", hog->held_mib); return; }
        reply(id, "ok held=%ld", hog->held_mib);
    } else if (strcmp(cmd, "free") == 0) {
        if (hog_pid < 0) { reply(id, "ok held=0"); return; }
        if (a1 && strcmp(a1, "all") == 0) hog->target_mib = 0;
        else if (a1 && strtol(a1, NULL, 10) >= 0) {
            long t = hog->target_mib - strtol(a1, NULL, 10);
            hog->target_mib = t > 0 ? t : 0;
        } else { reply(id, "err usage: free MIB|all"); return; }
        if (hog->held_mib > hog->target_mib && wait_hog() < 0) {
            reply(id, "err hog killed or stalled held=%ld", hog->held_mib);
            return;
        }
        reply(id, "ok held=%ld", hog->held_mib);
    } else if (strcmp(cmd, "held") == 0) {
        reply(id, "ok held=%ld target=%ld alive=%d", hog->held_mib, hog->target_mib, hog_pid > 0);
    } else if (strcmp(cmd, "meminfo") == 0) {
        cmd_meminfo(id);
    } else if (strcmp(cmd, "oomkills") == 0) {
        cmd_oomkills(id);
    } else if (strcmp(cmd, "sample") == 0) {
        cmd_sample(id);
    } else if (strcmp(cmd, "grow") == 0) {
        cmd_grow(id, a1, a2);
    } else if (strcmp(cmd, "shrink") == 0) {
        cmd_shrink(id, a1);
    } else if (strcmp(cmd, "app") == 0) {
        cmd_app(id, a1, a2);
    } else if (strcmp(cmd, "appresult") == 0) {
        cmd_appresult(id);
    } else if (strcmp(cmd, "cpuburn") == 0) {
        set_switch(id, a1, &burn_pid, 0);
    } else if (strcmp(cmd, "burncpu-when-ballooned") == 0) {
        set_switch(id, a1, &burn_ballooned_pid, 1);
    } else {
        reply(id, "err unknown command %s", cmd);
    }
}

int main(int argc, char **argv) {
    const char *dev = argc > 1 ? argv[1] : "/dev/ttyS1";
    write_file("/proc/self/oom_score_adj", "-1000");
    hog = mmap(NULL, sizeof *hog, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (hog == MAP_FAILED) { perror("mmap"); return 1; }
    memset((void *)hog, 0, sizeof *hog);
    boot_memtotal_kb = meminfo_kb("MemTotal");
    tty = open(dev, O_RDWR | O_NOCTTY);
    if (tty < 0) { perror(dev); return 1; }
    struct termios t;
    if (tcgetattr(tty, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(tty, TCSANOW, &t);
    }
    reply("READY", "ok boot_memtotal_kb=%ld", boot_memtotal_kb);
    char buf[LINE_MAX_LEN];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(tty, buf + len, sizeof buf - 1 - len);
        if (r < 0) { if (errno == EINTR) continue; sleep_ns(HOG_IDLE_NS * 10); continue; }
        if (r == 0) { sleep_ns(HOG_IDLE_NS); continue; }
        len += r;
        buf[len] = 0;
        char *start = buf;
        char *nl;
        while ((nl = memchr(start, '\n', buf + len - start)) != NULL) {
            *nl = 0;
            if (nl > start && nl[-1] == '\r') nl[-1] = 0;
            handle(start);
            start = nl + 1;
        }
        len = buf + len - start;
        memmove(buf, start, len);
        if (len == sizeof buf - 1) len = 0; /* an over-long line without newline: drop it */
    }
}
