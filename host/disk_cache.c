/* Disk cache of program binaries: one file per (device, source + options), written atomically,
 * checked on load (magic, versions, key, size, checksum) so that a corrupt, truncated or foreign
 * file is rejected and rebuilt. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CACHE_MAGIC "CLNRMBIN"
#define CACHE_FORMAT 1u
#define CACHE_SUFFIX ".clbin"

typedef struct cache_header {
    char magic[8];
    uint32_t format;
    uint32_t library_version;
    uint64_t dev_hash;
    uint64_t key;
    uint64_t payload_size;
    uint64_t payload_hash;
} cache_header;

static const uint32_t library_version =
    (CLNORM_VERSION_MAJOR << 16) | (CLNORM_VERSION_MINOR << 8) | CLNORM_VERSION_PATCH;

/* FNV-1a, 64 bits: not cryptographic, only a key and a corruption check. */
uint64_t hash_bytes(uint64_t seed, const void *data, size_t size)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_string(uint64_t seed, const char *s)
{
    return hash_bytes(seed, s, strlen(s) + 1);
}

uint64_t device_hash(const device_facts *dev)
{
    uint64_t h = hash_string(library_version, dev->name);
    h = hash_string(h, dev->vendor);
    h = hash_string(h, dev->driver_version);
    h = hash_string(h, dev->version);
    return hash_string(h, dev->platform_version);
}

static bool make_dirs(const char *path)
{
    char tmp[CLNORM_PATH_SIZE];
    copy_message(tmp, sizeof tmp, path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return false;
    struct stat st;
    return stat(tmp, &st) == 0 && S_ISDIR(st.st_mode) && access(tmp, W_OK | X_OK) == 0;
}

void disk_cache_resolve_dir(const char *setting, char *dir, size_t size)
{
    dir[0] = '\0';
    const char *env = getenv("CLNORM_CACHE_DIR");
    if (setting) {
        copy_message(dir, size, setting);
    } else if (env) {
        if (strcmp(env, "off") != 0)
            copy_message(dir, size, env);
    } else if (getenv("XDG_CACHE_HOME") && getenv("XDG_CACHE_HOME")[0] == '/') {
        snprintf(dir, size, "%s/clnorm", getenv("XDG_CACHE_HOME"));
    } else if (getenv("HOME") && getenv("HOME")[0] == '/') {
        snprintf(dir, size, "%s/.cache/clnorm", getenv("HOME"));
    }
}

/* Creates the folder; "" when it cannot be used. */
void disk_cache_prepare_dir(char *dir)
{
    if (dir[0] && !make_dirs(dir))
        dir[0] = '\0';
}

void disk_cache_path(const char *dir, uint64_t dev_hash, uint64_t key, char *path, size_t size)
{
    snprintf(path, size, "%s/%016llx-%016llx" CACHE_SUFFIX, dir, (unsigned long long)dev_hash,
             (unsigned long long)key);
}

static bool is_device_file(const char *name, uint64_t dev_hash)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%016llx-", (unsigned long long)dev_hash);
    size_t len = strlen(name);
    return strncmp(name, prefix, strlen(prefix)) == 0 && len > strlen(CACHE_SUFFIX) &&
           strcmp(name + len - strlen(CACHE_SUFFIX), CACHE_SUFFIX) == 0;
}

/* Counts (and optionally removes) the device's cache files. */
static int for_device_files(const char *dir, uint64_t dev_hash, bool remove_them)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int count = 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        if (!is_device_file(e->d_name, dev_hash))
            continue;
        count++;
        if (remove_them) {
            char path[CLNORM_PATH_SIZE + 300];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return count;
}

bool disk_cache_has_device(const char *dir, uint64_t dev_hash)
{
    return for_device_files(dir, dev_hash, false) > 0;
}

int disk_cache_remove_device(const char *dir, uint64_t dev_hash)
{
    return for_device_files(dir, dev_hash, true);
}

unsigned char *disk_cache_load(const char *dir, uint64_t dev_hash, uint64_t key, size_t *size,
                               const char **why)
{
    char path[CLNORM_PATH_SIZE + 64];
    disk_cache_path(dir, dev_hash, key, path, sizeof path);
    *why = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL; /* a miss, not a rejection */
    unsigned char *payload = NULL;
    cache_header h;
    struct stat st;
    if (fread(&h, sizeof h, 1, f) != 1 || fstat(fileno(f), &st) != 0) {
        *why = "shorter than its header";
    } else if (memcmp(h.magic, CACHE_MAGIC, 8) != 0 || h.format != CACHE_FORMAT) {
        *why = "not a clnorm cache file";
    } else if (h.library_version != library_version || h.dev_hash != dev_hash || h.key != key) {
        *why = "written for another library version, device or source";
    } else if (h.payload_size == 0 || (uint64_t)st.st_size != sizeof h + h.payload_size) {
        *why = "truncated or padded";
    } else if (!(payload = malloc(h.payload_size))) {
        *why = "too large to load";
    } else if (fread(payload, 1, h.payload_size, f) != h.payload_size ||
               hash_bytes(0, payload, h.payload_size) != h.payload_hash) {
        *why = "checksum mismatch";
        free(payload);
        payload = NULL;
    } else {
        *size = h.payload_size;
    }
    fclose(f);
    return payload;
}

bool disk_cache_store(const char *dir, uint64_t dev_hash, uint64_t key, const unsigned char *bin,
                      size_t size)
{
    char path[CLNORM_PATH_SIZE + 64], tmp[CLNORM_PATH_SIZE + 80];
    disk_cache_path(dir, dev_hash, key, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return false;
    cache_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CACHE_MAGIC, 8);
    h.format = CACHE_FORMAT;
    h.library_version = library_version;
    h.dev_hash = dev_hash;
    h.key = key;
    h.payload_size = size;
    h.payload_hash = hash_bytes(0, bin, size);
    FILE *f = fdopen(fd, "wb");
    bool ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
    ok = (f ? fclose(f) == 0 : (close(fd), false)) && ok;
    /* rename is atomic: a reader sees the old file or the whole new one, never a partial one */
    if (!ok || chmod(tmp, 0644) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    return true;
}
