/*
 * Two cohort nodes in one C process, linked against libcohort_ffi.a.
 *
 * The "transport" is this file: every message a node multicasts is
 * delivered to every running node in one global order (agreed order), the
 * "kernel" and the fence device answer at once. Timeline:
 *
 *   1. both daemons start and join (ring 8, two_node quorum);
 *   2. both mount "fs1" rw: node 1 is first mounter (jid 0), node 2 gets jid 1;
 *   3. node 2 goes down: node 1 sees NodeDown, ring 12, quorum (two_node);
 *      node 1 fences node 2 (answered: success), replays journal 1, unblocks.
 *
 * Exits 0 only if each of those effects happened, in that order.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohort.h"

#define NODES 2
#define MAX_BUS 256
#define MAX_KERNEL 64
#define MAX_TIMERS 64

static CohortNode *node[NODES + 1];
static int alive[NODES + 1];
static uint64_t now_ms = 0;

/* Messages waiting for delivery, in agreed order. */
static struct {
    uint32_t from;
    size_t len;
    uint8_t bytes[COHORT_MAX_MESSAGE];
} bus[MAX_BUS];
static size_t bus_head = 0, bus_len = 0;

/* Kernel and fence answers waiting to be fed back (never fed while a node's
   effects are being polled: inputs go in once its queues are drained). */
enum { K_MOUNT_RESULT, K_FIRST_DONE, K_RECOVERY_DONE, K_FENCED };
static struct {
    uint32_t node;
    int what;
    char fs[COHORT_FS_NAME_CAP];
    uint16_t jid;
    uint32_t target;
    uint64_t target_inc;
} kernel[MAX_KERNEL];
static size_t kernel_head = 0, kernel_len = 0;

static struct {
    uint32_t node;
    uint64_t token, at;
} timers[MAX_TIMERS];
static size_t n_timers = 0;

/* What the checks look for. */
static int seen_mount_first = 0, seen_mount2 = 0, seen_fence = 0, seen_recover = 0, seen_unblock_after_recover = 0;
static int step = 0;

static void fail(const char *what, CohortResult r) {
    fprintf(stderr, "FAIL: %s: %d (%s)\n", what, (int)r, cohort_result_str((int32_t)r));
    exit(1);
}

static void check(const char *what, CohortResult r) {
    if (r != COHORT_RESULT_OK) {
        fail(what, r);
    }
}

static void say(uint32_t n, const char *fmt, ...) {
    va_list ap;
    printf("[%6llu ms] node %u: ", (unsigned long long)now_ms, n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static size_t push_kernel(uint32_t n, int what, const char *fs, uint16_t jid) {
    if (kernel_len == MAX_KERNEL) {
        fprintf(stderr, "FAIL: kernel queue full\n");
        exit(1);
    }
    size_t i = (kernel_head + kernel_len++) % MAX_KERNEL;
    kernel[i].node = n;
    kernel[i].what = what;
    snprintf(kernel[i].fs, sizeof kernel[i].fs, "%s", fs);
    kernel[i].jid = jid;
    return i;
}

static void execute(uint32_t n, const CohortEffect *e) {
    switch (e->kind) {
    case COHORT_EFFECT_KIND_SET_TIMER:
        if (n_timers == MAX_TIMERS) {
            fprintf(stderr, "FAIL: timer table full\n");
            exit(1);
        }
        timers[n_timers].node = n;
        timers[n_timers].token = e->timer_token;
        timers[n_timers].at = e->timer_at_ms;
        n_timers++;
        break;
    case COHORT_EFFECT_KIND_KERNEL:
        switch (e->kernel_op) {
        case COHORT_KERNEL_OP_MOUNT_FIRST:
            say(n, "kernel: mount %s as first mounter, jid %u", e->fs, e->jid);
            if (n == 1 && e->jid == 0) {
                seen_mount_first = 1;
            }
            push_kernel(n, K_MOUNT_RESULT, e->fs, 0);
            push_kernel(n, K_FIRST_DONE, e->fs, 0);
            break;
        case COHORT_KERNEL_OP_MOUNT:
            say(n, "kernel: mount %s, jid %u", e->fs, e->jid);
            if (n == 2 && e->jid == 1) {
                seen_mount2 = 1;
            }
            push_kernel(n, K_MOUNT_RESULT, e->fs, 0);
            break;
        case COHORT_KERNEL_OP_RECOVER_JOURNAL:
            say(n, "kernel: replay journal %u of %s", e->jid, e->fs);
            if (n == 1 && e->jid == 1 && seen_fence) {
                seen_recover = 1;
            }
            push_kernel(n, K_RECOVERY_DONE, e->fs, e->jid);
            break;
        case COHORT_KERNEL_OP_BLOCK:
            say(n, "kernel: block %s", e->fs);
            break;
        case COHORT_KERNEL_OP_UNBLOCK:
            say(n, "kernel: unblock %s", e->fs);
            if (n == 1 && seen_recover) {
                seen_unblock_after_recover = 1;
            }
            break;
        case COHORT_KERNEL_OP_SET_JID:
            say(n, "kernel: %s uses jid %u", e->fs, e->jid);
            break;
        default:
            say(n, "kernel: op %u on %s", (unsigned)e->kernel_op, e->fs);
            break;
        }
        break;
    case COHORT_EFFECT_KIND_FENCE:
        say(n, "fence node %u -> success", e->node);
        if (n == 1 && e->node == 2 && step == 3) {
            seen_fence = 1;
        }
        /* The fence agent powers the node off and answers (fed back once
           this node's effects are drained, like every other answer). */
        {
            size_t i = push_kernel(n, K_FENCED, "", 0);
            kernel[i].target = e->node;
            kernel[i].target_inc = e->incarnation;
        }
        break;
    case COHORT_EFFECT_KIND_NOTIFY:
        if (e->notice == COHORT_NOTICE_DAEMON_SYNCED) {
            say(n, "daemon group synced, %u members", e->members);
        } else if (e->notice == COHORT_NOTICE_GROUP_SYNCED) {
            say(n, "mount group synced, %u members", e->members);
        } else if (e->notice == COHORT_NOTICE_JOURNAL_RECOVERED) {
            say(n, "journal %u recovered", e->jid);
        } else if (e->notice == COHORT_NOTICE_FENCED) {
            say(n, "node %u fenced", e->node);
        }
        break;
    case COHORT_EFFECT_KIND_RESET_SELF:
    case COHORT_EFFECT_KIND_INCOMPATIBLE:
        say(n, "unexpected stop (kind %u)", (unsigned)e->kind);
        exit(1);
    default:
        break;
    }
}

/* Take everything node n has: effects (executed) and messages (to the bus). */
static int drain(uint32_t n) {
    int moved = 0;
    CohortEffect e;
    CohortResult r;
    while ((r = cohort_poll_effect(node[n], &e)) == COHORT_RESULT_OK) {
        moved = 1;
        execute(n, &e);
    }
    if (r != COHORT_RESULT_EMPTY) {
        fail("poll_effect", r);
    }
    for (;;) {
        if (bus_len == MAX_BUS) {
            fprintf(stderr, "FAIL: bus full\n");
            exit(1);
        }
        size_t i = (bus_head + bus_len) % MAX_BUS;
        size_t len = 0;
        r = cohort_poll_transmit(node[n], bus[i].bytes, sizeof bus[i].bytes, &len);
        if (r == COHORT_RESULT_EMPTY) {
            break;
        }
        check("poll_transmit", r);
        bus[i].from = n;
        bus[i].len = len;
        bus_len++;
        moved = 1;
    }
    return moved;
}

/* One step of the cluster; 0 when nothing is left. */
static int pump_once(void) {
    int moved = 0;
    for (uint32_t n = 1; n <= NODES; n++) {
        if (alive[n]) {
            moved |= drain(n);
        }
    }
    if (bus_len > 0) {
        size_t i = bus_head;
        bus_head = (bus_head + 1) % MAX_BUS;
        bus_len--;
        if (alive[bus[i].from]) {
            for (uint32_t m = 1; m <= NODES; m++) {
                if (alive[m]) {
                    CohortResult r = cohort_handle_deliver(node[m], now_ms, bus[i].from, bus[i].bytes, bus[i].len);
                    if (r != COHORT_RESULT_OK) {
                        fail("handle_deliver", r);
                    }
                }
            }
        }
        return 1;
    }
    if (kernel_len > 0) {
        size_t i = kernel_head;
        kernel_head = (kernel_head + 1) % MAX_KERNEL;
        kernel_len--;
        uint32_t n = kernel[i].node;
        if (!alive[n]) {
            return 1;
        }
        switch (kernel[i].what) {
        case K_MOUNT_RESULT:
            check("mount_result", cohort_handle_kernel_mount_result(node[n], now_ms, kernel[i].fs, true));
            break;
        case K_FIRST_DONE:
            check("first_recovery_done", cohort_handle_kernel_first_recovery_done(node[n], now_ms, kernel[i].fs));
            break;
        case K_RECOVERY_DONE:
            check("recovery_done",
                  cohort_handle_kernel_recovery_done(node[n], now_ms, kernel[i].fs, kernel[i].jid, true));
            break;
        case K_FENCED:
            check("handle_fenced",
                  cohort_handle_fenced(node[n], now_ms, kernel[i].target, kernel[i].target_inc, true));
            break;
        }
        return 1;
    }
    if (!moved && n_timers > 0) {
        size_t best = 0;
        for (size_t i = 1; i < n_timers; i++) {
            if (timers[i].at < timers[best].at) {
                best = i;
            }
        }
        uint32_t n = timers[best].node;
        uint64_t token = timers[best].token;
        if (timers[best].at > now_ms) {
            now_ms = timers[best].at;
        }
        timers[best] = timers[--n_timers];
        if (alive[n]) {
            check("handle_timer", cohort_handle_timer(node[n], now_ms, token));
        }
        return 1;
    }
    return moved;
}

static void pump(void) {
    for (int i = 0; i < 100000; i++) {
        if (!pump_once()) {
            return;
        }
        now_ms += 1;
    }
    fprintf(stderr, "FAIL: no quiescence\n");
    exit(1);
}

static int stable(uint32_t n) {
    static CohortStatus st; /* ~15 KiB: not on the stack */
    check("status", cohort_status(node[n], &st));
    return st.stable;
}

static uint32_t jid_of(uint32_t at, uint32_t who) {
    static CohortStatus st;
    check("status", cohort_status(node[at], &st));
    for (uint32_t g = 0; g < st.n_groups; g++) {
        for (uint32_t m = 0; m < st.groups[g].n_members; m++) {
            if (st.groups[g].members[m].node == who && st.groups[g].members[m].has_jid) {
                return st.groups[g].members[m].jid;
            }
        }
    }
    return 0xffff;
}

static void start(uint32_t n, uint64_t ring, const uint32_t *members, size_t n_members) {
    check("ring", cohort_handle_ring(node[n], now_ms, ring, members, n_members));
    check("quorum", cohort_handle_quorum(node[n], now_ms, ring, true, members, n_members));
}

int main(void) {
    printf("cohort C host: node memory %zu bytes, align %zu\n", cohort_node_size(), cohort_node_align());
    for (uint32_t n = 1; n <= NODES; n++) {
        size_t size = (cohort_node_size() + cohort_node_align() - 1) / cohort_node_align() * cohort_node_align();
        void *mem = aligned_alloc(cohort_node_align(), size);
        if (!mem) {
            perror("aligned_alloc");
            return 1;
        }
        check("node_init", cohort_node_init(mem, size, n, 1));
        node[n] = (CohortNode *)mem;
    }

    /* 1. Daemons start: node 1 alone in the group, then node 2 joins. */
    step = 1;
    const uint32_t both[] = {1, 2}, one[] = {1};
    alive[1] = 1;
    start(1, 8, both, 2);
    CohortMemberReason j1 = {1, COHORT_REASON_JOIN}, j2 = {2, COHORT_REASON_JOIN};
    check("confchg", cohort_handle_confchg(node[1], now_ms, one, 1, &j1, 1, NULL, 0));
    pump();
    alive[2] = 1;
    start(2, 8, both, 2);
    for (uint32_t n = 1; n <= 2; n++) {
        check("confchg", cohort_handle_confchg(node[n], now_ms, both, 2, &j2, 1, NULL, 0));
    }
    pump();
    if (!stable(1) || !stable(2)) {
        fprintf(stderr, "FAIL: daemons not stable after joining\n");
        return 1;
    }
    printf("--- both daemons joined\n");

    /* 2. Mount fs1 on both. */
    step = 2;
    for (uint32_t n = 1; n <= 2; n++) {
        check("request_mount", cohort_request_mount(node[n], now_ms, "fs1", COHORT_MODE_RW, 2));
    }
    pump();
    if (!seen_mount_first || !seen_mount2 || jid_of(1, 2) != 1 || !stable(1) || !stable(2)) {
        fprintf(stderr, "FAIL: mount: first=%d second=%d jid(2)=%u\n", seen_mount_first, seen_mount2, jid_of(1, 2));
        return 1;
    }
    /* A second mount of the same filesystem is refused with a code. */
    CohortResult again = cohort_request_mount(node[1], now_ms, "fs1", COHORT_MODE_RW, 2);
    if (again != COHORT_RESULT_ERR_ALREADY_MOUNTED) {
        fail("expected ALREADY_MOUNTED", again);
    }
    printf("--- fs1 mounted on both (node 2 has jid 1)\n");

    /* 3. Node 2 goes down. */
    step = 3;
    alive[2] = 0;
    now_ms += 1000;
    printf("[%6llu ms] node 2: goes down\n", (unsigned long long)now_ms);
    CohortMemberReason down = {2, COHORT_REASON_NODE_DOWN};
    check("confchg", cohort_handle_confchg(node[1], now_ms, one, 1, NULL, 0, &down, 1));
    start(1, 12, one, 1); /* two_node: one node stays quorate */
    pump();

    int ok = seen_fence && seen_recover && seen_unblock_after_recover && stable(1) && jid_of(1, 2) == 0xffff;
    printf("--- fence %s, replay %s, unblock %s, stable %s\n", seen_fence ? "yes" : "NO",
           seen_recover ? "yes" : "NO", seen_unblock_after_recover ? "yes" : "NO", stable(1) ? "yes" : "NO");
    for (uint32_t n = 1; n <= NODES; n++) {
        cohort_node_fini(node[n]);
        free(node[n]);
    }
    if (!ok) {
        fprintf(stderr, "FAIL: expected fence -> replay -> unblock on node 1\n");
        return 1;
    }
    printf("OK\n");
    return 0;
}
