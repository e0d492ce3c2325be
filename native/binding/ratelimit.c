/* ratelimit: not built yet; its part does nothing. */
#include "fs_binding.h"

const fs_part fs_ratelimit_part = {0};
