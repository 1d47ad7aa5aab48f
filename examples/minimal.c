/* The smallest program using clnorm: open the default device, check it, list it. */
#include <stdio.h>

#include <clnorm.h>

int main(void)
{
    char message[4096];
    clnorm_context *ctx = NULL;
    if (clnorm_context_create(&ctx, NULL, message, sizeof message) != CLNORM_OK) {
        fprintf(stderr, "%s\n", message);
        return 1;
    }
    clnorm_device_info info;
    clnorm_status status = clnorm_context_device_info(ctx, &info);
    if (status == CLNORM_OK)
        status = clnorm_self_check(ctx);
    if (status != CLNORM_OK) {
        fprintf(stderr, "%s\n", clnorm_last_error(ctx));
        clnorm_context_release(ctx);
        return 1;
    }
    printf("clnorm %s works on %s\n", CLNORM_VERSION_STRING, info.name);
    clnorm_context_release(ctx);
    return 0;
}
