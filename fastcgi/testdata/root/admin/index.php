<?php echo "admin index";
