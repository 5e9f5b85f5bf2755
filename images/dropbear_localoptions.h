/* Dropbear build options for lab guests: public-key login only. Password
 * authentication is compiled out because there is no static cross libcrypt. */
#define DROPBEAR_SVR_PASSWORD_AUTH 0
#define DROPBEAR_SVR_PAM_AUTH 0
#define DROPBEAR_X11FWD 0
#define SFTPSERVER_PATH "/usr/libexec/sftp-server"
#define DROPBEAR_DEFPATH "/usr/sbin:/usr/bin:/sbin:/bin"
