/* hedge: not built yet; its part does nothing. */
#include "fs_binding.h"

const fs_part fs_hedge_part = {0};
